import ArgumentParser
import COffloadShim
import Foundation

@main
struct Offload: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offload",
        abstract: "A software offloading network interface: engine, host software, and real links.",
        subcommands: [DemoCommand.self, HostCommand.self, GatewayCommand.self, ServeCommand.self, SendCommand.self, BenchCommand.self])

    /// Output leaves a line at a time even into a file or a pipe, so that a server's line per
    /// connection and a gateway's periodic stats can be read while the command runs.
    static func main() {
        offload_stdout_line_buffered()
        main(nil)
    }
}

/// A line for a person, not for a program reading standard output (progress, notes, what a
/// command runs with when its results are JSON).
func printToStandardError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
