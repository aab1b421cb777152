import MicroHTTPD
import Platform
import Testing
@testable import UploadService

@Suite struct ConnectionPolicyTests {
    let flooder = AddressGroup(ipv4: 0x7f00_0001)
    let neighbour = AddressGroup(ipv4: 0x7f00_0002)

    @Test func anAddressUsesAnyFreeSlotUntilTheReserve() {
        let policy = ConnectionPolicy(limit: 100, perAddress: .automatic)
        for _ in 0..<90 { #expect(policy.opened(from: flooder, now: 0).admission == .admit) }
        #expect(policy.opened(from: flooder, now: 0).admission == .refuse(.busy))
        // The last tenth is for addresses that hold few connections.
        for _ in 0..<ConnectionPolicy.fewConnections {
            #expect(policy.opened(from: neighbour, now: 0).admission == .admit)
        }
        #expect(policy.opened(from: neighbour, now: 0).admission == .refuse(.busy))
        #expect(policy.opened(from: AddressGroup(ipv4: 3), now: 0).admission == .admit)
        // A connection given back is a slot again.
        policy.closed(from: flooder, .admit)
        #expect(policy.admittedCount == 98)
    }

    @Test func refusedConnectionsAreBoundedThenDropped() {
        let policy = ConnectionPolicy(limit: 10, perAddress: .atMost(2))
        #expect(policy.opened(from: flooder, now: 0).admission == .admit)
        #expect(policy.opened(from: flooder, now: 0).admission == .admit)
        let slots = ConnectionPolicy.refusalSlots(limit: 10)
        var decisions: [ConnectionPolicy.Decision] = []
        for step in 0..<slots + 3 { decisions.append(policy.opened(from: flooder, now: UInt64(step) * 300_000_000)) }
        #expect(decisions.prefix(slots).allSatisfy { $0.admission == .refuse(.addressLimit) })
        #expect(decisions.suffix(3).allSatisfy { $0.admission == .drop })
        // Logged at most once a second for the address.
        #expect(decisions.filter(\.log).count == 5)  // at 0, 1.2, 2.4, 3.6 and 4.8 s
        policy.closed(from: flooder, .refuse(.addressLimit))
        #expect(policy.opened(from: flooder, now: 0).admission == .refuse(.addressLimit))
        #expect(policy.opened(from: neighbour, now: 0).admission == .admit)
    }

    @Test func unlimitedHasNoReserveButTheLimit() {
        let policy = ConnectionPolicy(limit: 20, perAddress: .unlimited)
        for _ in 0..<20 { #expect(policy.opened(from: flooder, now: 0).admission == .admit) }
        #expect(policy.opened(from: neighbour, now: 0).admission == .refuse(.busy))
    }

    @Test func socketsForTheLibraryFitTheirRoom() {
        for room in [40, 100, 287, 288, 1000, 100_000] {
            let admitted = ConnectionPolicy.admittable(within: room)
            #expect(ConnectionPolicy.sockets(admitting: admitted) <= room, "room \(room)")
            #expect(ConnectionPolicy.sockets(admitting: admitted + 4) > room, "room \(room)")
        }
    }

    @Test func addressesAreGroupedByHost() {
        func group(_ text: String) -> AddressGroup? { SocketAddress(host: text, port: 1)?.group }
        #expect(group("2001:db8:1:2::1") == group("2001:db8:1:2:ffff::9"))
        #expect(group("2001:db8:1:2::1") != group("2001:db8:1:3::1"))
        #expect(group("::ffff:192.0.2.7") == group("192.0.2.7"))
        #expect(group("192.0.2.7") != group("192.0.2.8"))
        #expect(group("192.0.2.7")?.description == "192.0.2.7")
        #expect(group("2001:db8:1:2::1")?.description == "2001:db8:1:2::/64")
    }
}

@Suite struct HostNameTests {
    @Test(arguments: ["127.0.0.1", "127.0.0.1:9000", "[::1]:9000", "[::1]", "localhost", "LocalHost.:80",
                      "10.1.2.3:1", "uploads.example.com:443", "Uploads.Example.com."])
    func serverNames(host: String) {
        #expect(HostName.isServerName(host, publicNames: ["uploads.example.com"]))
    }

    @Test(arguments: ["attacker.example", "attacker.example:9000", "", "127.0.0.1.nip.io", "[::1", "[::1]x",
                      "localhost:port", "uploads.example.com.attacker.example", "1.2.3.4:99999x", "::1"])
    func otherNames(host: String) {
        #expect(!HostName.isServerName(host, publicNames: ["uploads.example.com"]))
    }
}
