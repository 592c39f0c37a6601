import ArgumentParser

@main
struct Offload: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offload",
        abstract: "A software offloading network interface: engine, host software, and real links.",
        subcommands: [DemoCommand.self, HostCommand.self, GatewayCommand.self, ServeCommand.self, SendCommand.self, BenchCommand.self])
}
