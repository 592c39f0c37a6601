#if os(Linux)
import Glibc
import COffloadShim
import OffloadCore

/// The errno plumbing of the Linux links: every failed system call becomes
/// `LinkError.system(operation:errno:detail:)` with the C library's text for the errno and
/// what the call was working on.
enum SystemCall {
    /// The C library's message for `code` ("Device or resource busy").
    static func message(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }

    /// The error for a call that failed with `code`; `subject` names what it was working on.
    static func error(_ operation: String, _ code: Int32, _ subject: String) -> LinkError {
        .system(operation: operation, errno: code, detail: "\(subject): \(message(code))")
    }

    /// A shim result: the value when it is not negative, else the error for -value.
    @discardableResult
    static func check(_ result: Int32, _ operation: String, _ subject: String) throws(LinkError) -> Int32 {
        guard result >= 0 else { throw error(operation, -result, subject) }
        return result
    }

    /// The current thread's errno.
    static var lastError: Int32 { errno }

    /// Closes a descriptor, ignoring the result (Linux releases it even on EINTR).
    static func close(_ descriptor: Int32) {
        _ = Glibc.close(descriptor)
    }

    /// Reads an interface's hardware address by name (in this namespace), nil when it has none.
    static func hardwareAddress(interface name: String) -> MACAddress? {
        var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0)
        let rc = withUnsafeMutableBytes(of: &bytes) { raw in
            offload_interface_hardware_address(name, raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return rc == 0 ? MACAddress(bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5) : nil
    }
}
#endif
