import Foundation
import Testing
import OffloadTestSupport

/// What a person sees when a command cannot do its job: one line saying why, a non-zero
/// status, no stack trace, and nothing printed as if it had started.
@Suite("Command errors", .serialized, .enabled(if: Root.shouldRun))
struct CommandErrorTests {
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("offload").path
    }

    /// Runs `offload ARGUMENTS` (after `prefix`, such as a change of user) and checks that it
    /// failed with one error line containing `expected`.
    static func expectOneClearLine(_ arguments: String, prefix: String = "", _ expected: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        let result = Shell.run("\(prefix)\(binary) \(arguments)", timeout: 20)
        let lines = result.output.split(separator: "\n")
        #expect(result.status != 0, "\(arguments): \(result.output)", sourceLocation: sourceLocation)
        #expect(lines.first?.hasPrefix("Error: ") == true, "\(arguments): \(result.output)", sourceLocation: sourceLocation)
        #expect(lines.first?.contains(expected) == true, "\(arguments): \(result.output)", sourceLocation: sourceLocation)
        #expect(!result.output.contains("Fatal error") && !result.output.contains("Stack dump")
                && !result.output.contains("Current stack trace"), "\(result.output)", sourceLocation: sourceLocation)
        // No start line (each command's begins with its name) before or after the error.
        #expect(!lines.contains { $0.hasPrefix("offload ") && $0.contains(":") && !$0.hasPrefix("offload --help") },
                "\(arguments): \(result.output)", sourceLocation: sourceLocation)
    }

    @Test func withoutThePrivilegeToOpenATap() {
        guard Root.check() else { return }
        let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "
        for command in ["host --link tap:offepriv --address 10.77.9.2/24 --duration 1",
                        "serve --link tap:offepriv --address 10.77.9.2/24 --port 80 --duration 1",
                        "gateway --port tap:offepriv=10.77.9.1/24 --duration 1"] {
            Self.expectOneClearLine(command, prefix: nobody, "needs CAP_NET_ADMIN")
        }
    }

    /// A nice value asked for and not granted stops the gateway; only the default is skipped.
    @Test func aNiceValueWithoutThePrivilegeToSetIt() {
        guard Root.check() else { return }
        Self.expectOneClearLine("gateway --port tap:offenice=10.77.9.1/24 --duration 1 --nice=-5",
                                prefix: "setpriv --bounding-set -sys_nice ", "--nice: cannot run at nice -5")
    }

    @Test func aTapNameInUse() throws {
        guard Root.check() else { return }
        let holder = Shell.start("\(Self.binary) host --link tap:offebusy --address 10.77.9.2/24 --duration 4", timeout: 10)
        Thread.sleep(forTimeInterval: 1)
        for command in ["host --link tap:offebusy --address 10.77.9.2/24 --duration 1",
                        "send --link tap:offebusy --address 10.77.9.2/24 --to 10.77.9.1:5001 --bytes 10 --duration 1",
                        "gateway --port tap:offebusy=10.77.9.1/24 --duration 1"] {
            Self.expectOneClearLine(command, "held by another open TAP device")
        }
        #expect(holder.finish().succeeded)
    }

    /// `bench --json` writes the JSON alone to standard output, notes (here: a benchmark
    /// skipped without root) to standard error. The note came first on standard output, and
    /// the output was not JSON.
    @Test func benchJSONIsJSONAlone() throws {
        guard Root.check() else { return }
        let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "
        let run = Shell.run("\(nobody)\(Self.binary) bench --filter 'gateway vs kernel' --json 2>/dev/null", timeout: 20)
        #expect(run.status == 0, "\(run.output)")
        let parsed = try? JSONSerialization.jsonObject(with: Data(run.output.utf8))
        #expect(parsed is [Any], "not JSON: \(run.output)")
    }

    @Test func aMissingInterface() {
        guard Root.check() else { return }
        Self.expectOneClearLine("host --link afpacket:offenone0 --address 10.77.9.2/24 --duration 1", "no such interface")
    }

    @Test(arguments: [
        ("host --link tap:offex --address 10.77.0.300/24", "'10.77.0.300/24' is invalid for '--address"),
        ("send --link tap:offex --address 10.77.0.3/24 --to 10.77.0.4:99999 --bytes 1", "is invalid for '--to"),
        ("serve --link tap:offex --address 10.77.0.3/24 --port 0", "--port is 1 to 65535"),
        ("serve --link tap:offex --address 10.77.0.3/24 --port 7 --threads 3", "--threads is 1 or 2"),
        ("gateway --port tap:offex=10.77.0.1", "is invalid for '--port"),
        ("gateway --port tap:offex=10.77.0.1/24 --port tap:offex=10.77.1.1/24", "a device is named by two --port options"),
        ("gateway --port tap:offex=10.77.0.1/24 --tcp-idle 0", "--tcp-idle is a number of seconds above 0"),
        ("demo --loss 2", "--loss is a fraction"),
        ("demo --flows 0", "--flows is 1 to 256"),
        ("bench --filter \"fast path, 10k\" --seconds 0", "--seconds is a number of seconds above 0"),
        ("bench --filter \"fast path, 10k\" --seconds 1e300", "--seconds is a number of seconds above 0"),
        // Numbers that used to trap (a Duration's nanoseconds overflowed, a table or buffer of 0).
        ("host --link tap:offex --address 10.77.0.3/24 --duration inf", "--duration is a number of seconds from 0"),
        ("host --link tap:offex --address 10.77.0.3/24 --duration=-1", "--duration is a number of seconds from 0"),
        ("gateway --port tap:offex=10.77.0.1/24 --stats nan", "--stats is a number of seconds from 0"),
        ("gateway --port tap:offex=10.77.0.1/24 --duration 1e300", "--duration is a number of seconds from 0"),
        ("gateway --port tap:offex=10.77.0.1/24 --table-size 0", "--table-size is 1 to"),
        ("gateway --port tap:offex=10.77.0.1/24 --forward tcp:80=10.77.0.2:80", "--forward needs --nat-outside"),
        ("gateway --port tap:offex=10.77.0.1/24 --nat-outside offex --forward sctp:80=10.77.0.2:80",
         "is invalid for '--forward"),
        ("gateway --port tap:offex=10.77.0.1/24 --nat-outside offex --forward tcp:80=10.77.0.2:80 "
            + "--forward tcp:80=10.77.0.3:80", "an outside port is forwarded by two --forward options"),
        ("gateway --port tap:offex=10.77.0.1/24 --nice 20", "--nice is -20 to 19"),
        ("gateway --port tap:offex=10.77.0.1/24 --nat-outside offex --forward tcp:80=10.77.0.2:80",
         "10.77.0.2 is not a host inside"),
        ("serve --link tap:offex --address 10.77.0.3/24 --port 7 --msl nan", "--msl is a number of seconds above 0"),
        ("serve --link tap:offex --address 10.77.0.3/24 --port 7 --receive-buffer 0", "--receive-buffer is 1024 bytes"),
        ("serve --link tap:offex --address 10.77.0.3/24 --port 7 --mode source --bytes=-1", "--bytes cannot be negative"),
        ("send --link tap:offex --address 10.77.0.3/24 --to 10.77.0.4:9 --bytes=-5", "--bytes cannot be negative"),
        ("host --link afpacket:lo --address 10.77.0.3/24 --virtio-net-header", "--virtio-net-header is for tap: links"),
    ])
    func inputThatDoesNotParse(_ arguments: String, _ expected: String) {
        Self.expectOneClearLine(arguments, expected)
    }
}
