import Foundation
import Testing
import OffloadTestSupport

/// Every README example marked `<!-- example -->` runs as written, as root, against the
/// binary `swift test` built: `swift build` lines are left out, `swift run -c release offload`
/// and `.build/release/offload` become that binary, and `sudo` runs its command directly (a
/// small script first on PATH, so that `kill %1` still signals the command itself). Each
/// example runs under `bash -e` with a time limit, after and before a clean-up of the
/// namespaces and links it creates.
@Suite("README examples", .serialized, .enabled(if: Root.shouldRun))
struct ReadmeExamplesTests {
    struct Example: CustomTestStringConvertible, Sendable {
        let line: Int
        let script: String
        var testDescription: String { "README.md line \(line)" }
    }

    static let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("README.md")

    static var examples: [Example] {
        guard let text = try? String(contentsOf: readme, encoding: .utf8) else { return [] }
        let lines = text.components(separatedBy: "\n")
        var found: [Example] = []
        var i = 0
        while i < lines.count {
            if lines[i].trimmingCharacters(in: .whitespaces) == "<!-- example -->", i + 1 < lines.count,
               lines[i + 1].hasPrefix("```") {
                var body: [String] = []
                var j = i + 2
                while j < lines.count && !lines[j].hasPrefix("```") { body.append(lines[j]); j += 1 }
                found.append(Example(line: i + 2, script: body.joined(separator: "\n")))
                i = j
            }
            i += 1
        }
        return found
    }

    @Test func theReadmeHasItsExamples() {
        #expect(Self.examples.count >= 5, "the demo, host (TAP and veth), serve and send, gateway")
    }

    @Test(arguments: examples)
    func runs(_ example: Example) throws {
        guard Root.check() else { return }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("offload").path
        let script = example.script.components(separatedBy: "\n")
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("swift build") }
            .joined(separator: "\n")
            .replacingOccurrences(of: "swift run -c release offload", with: binary)
            .replacingOccurrences(of: ".build/release/offload", with: binary)
        let cleanUp = Self.cleanUp(for: script)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("readme-\(getpid())-\(example.line)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let sudo = directory.appendingPathComponent("sudo")
        try "#!/bin/sh\nexec \"$@\"\n".write(to: sudo, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: sudo.path)
        let file = directory.appendingPathComponent("example.sh")
        try ("set -e\nexport PATH=\(directory.path):$PATH\n" + script + "\n").write(to: file, atomically: true, encoding: .utf8)

        Shell.run(cleanUp, timeout: 30)
        let result = Shell.run("cd \(Self.readme.deletingLastPathComponent().path) && bash \(file.path)", timeout: 240)
        Shell.run(cleanUp, timeout: 30)
        #expect(result.succeeded, "README.md line \(example.line) failed (\(result.status)):\n\(result.output.suffix(3000))")
    }

    /// Deletes the namespaces and links an example creates (left over from an earlier run,
    /// or from this one if it failed half-way; the time limit ends what it started).
    static func cleanUp(for script: String) -> String {
        func names(after pattern: String) -> [String] {
            guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
            let range = NSRange(script.startIndex..., in: script)
            return regex.matches(in: script, range: range).compactMap {
                Range($0.range(at: 1), in: script).map { String(script[$0]) }
            }
        }
        let namespaces = Set(names(after: #"ip netns add (\w+)"#))
        let links = Set(names(after: #"ip link add (\w+)"#) + names(after: #"tap:(\w+)"#))
        return (namespaces.sorted().map { "ip netns del \($0) 2>/dev/null || true" }
                + links.sorted().map { "ip link del \($0) 2>/dev/null || true" })
            .joined(separator: "; ")
    }
}
