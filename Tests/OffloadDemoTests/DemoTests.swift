import Testing
@testable import OffloadDemo

@Suite struct DemoTests {
    @Test func aSmallDemoPasses() throws {
        var configuration = DemoConfiguration()
        configuration.flows = 4
        configuration.bytesPerConnection = 200_000
        let report = try Demo.run(configuration)
        #expect(report.passed, "\(report.text)")
    }
}
