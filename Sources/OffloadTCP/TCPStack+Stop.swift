import OffloadCore

extension TCPStack {
    /// Ends every connection where it is, for a stack that will not run again (its runtime
    /// stops). Each message not yet completed completes as failed (`stackStopped`), in id
    /// order after those already completed, so the application gets every buffer back; the
    /// sockets report `closed` with that error, and later calls are refused with it. An
    /// engine that ran a connection is gone too: the host fails what it had posted there.
    public func stop() {
        guard !isStopped else { return }
        isStopped = true
        for entry in sockets.values {
            if entry.offload == nil { entry.completions += entry.connection.takeCompletions() }
            let completed = entry.completions.reduce(0) { $0 + $1.count }
            let left = entry.buffers.count - completed
            guard left > 0 else { continue }
            let next = entry.offload?.nextID ?? entry.connection.sendQueue.nextID
            entry.completions.append(CompletionRange(lower: next - MessageID(left), upper: next - 1,
                                                     status: .failed(.stackStopped)))
        }
    }
}
