import MicroHTTPD
import Platform
import Synchronization

/// `--connections-per-address`.
public enum PerAddressLimit: Sendable, Equatable, CustomStringConvertible {
    /// Any address may use any free slot; only the last tenth of the slots is
    /// kept for addresses that hold few connections.
    case automatic
    case unlimited
    /// A hard cap, whatever the server's load.
    case atMost(Int)

    /// `auto`, `unlimited` (or `0`), or a number of connections.
    init?(_ text: String) {
        switch text {
        case "auto": self = .automatic
        case "unlimited", "0": self = .unlimited
        default:
            guard let count = Int(text), (1...1_000_000).contains(count) else { return nil }
            self = .atMost(count)
        }
    }

    public var description: String {
        switch self {
        case .automatic: "auto"
        case .unlimited: "unlimited"
        case .atMost(let count): String(count)
        }
    }
}

/// Who gets a connection slot. The library holds `limit + refusalSlots`
/// connections; this admits at most `limit` of them. The last `reserve` admitted
/// slots go only to addresses holding fewer than `fewConnections`, so that a
/// flood from one address never takes the slots its neighbours need: it is the
/// flooding address whose connections are refused. A refused connection is
/// answered 503 on its first request and closed; once `refusalSlots` refused
/// connections are open, further ones are closed without an answer.
final class ConnectionPolicy: Sendable {
    static let fewConnections = 8

    struct Decision: Equatable {
        let admission: Admission
        /// The address's admitted connections when it was refused.
        let holding: Int
        /// Refusals are logged at most once a second per address.
        let log: Bool
    }

    private struct State {
        var admitted = 0
        var refused = 0
        var byGroup: [AddressGroup: Int] = [:]
        var lastLogged: [AddressGroup: UInt64] = [:]
    }

    let limit: Int
    let reserve: Int
    let refusalSlots: Int
    let perAddress: PerAddressLimit
    private let state = Mutex(State())

    init(limit: Int, perAddress: PerAddressLimit) {
        self.limit = limit
        self.perAddress = perAddress
        reserve = perAddress == .automatic ? max(1, limit / 10) : 0
        refusalSlots = Self.refusalSlots(limit: limit)
    }

    /// Refused connections kept open for their answer, beside `limit` admitted ones.
    static func refusalSlots(limit: Int) -> Int { max(16, limit / 16) }

    /// The connections the library may hold for a policy admitting `limit`: the
    /// refused ones awaiting their answer and as many again being closed
    /// unanswered, so that the library always accepts and the policy decides
    /// (at its own limit the library leaves new connections unaccepted).
    static func sockets(admitting limit: Int) -> Int { limit + 2 * refusalSlots(limit: limit) }

    /// The most connections `sockets(admitting:)` fits into `room`.
    static func admittable(within room: Int) -> Int {
        max(1, room >= 18 * 16 ? room * 16 / 18 : room - 32)
    }

    var admittedCount: Int { state.withLock { $0.admitted } }

    func opened(from group: AddressGroup, now: UInt64 = ProcessEnvironment.monotonicNanoseconds()) -> Decision {
        state.withLock { state in
            let holding = state.byGroup[group] ?? 0
            let refusal: ConnectionRefusal?
            if case .atMost(let cap) = perAddress, holding >= cap {
                refusal = .addressLimit
            } else if state.admitted >= limit || (state.admitted >= limit - reserve && holding >= Self.fewConnections) {
                refusal = .busy
            } else {
                refusal = nil
            }
            guard let refusal else {
                state.admitted += 1
                state.byGroup[group] = holding + 1
                return Decision(admission: .admit, holding: holding, log: false)
            }
            let admission: Admission
            if state.refused < refusalSlots {
                state.refused += 1
                admission = .refuse(refusal)
            } else {
                admission = .drop
            }
            let log = state.lastLogged[group].map { now &- $0 >= 1_000_000_000 } ?? true
            if log {
                if state.lastLogged.count >= 4096 {
                    state.lastLogged = state.lastLogged.filter { now &- $0.value < 1_000_000_000 }
                }
                state.lastLogged[group] = now
            }
            return Decision(admission: admission, holding: holding, log: log)
        }
    }

    func closed(from group: AddressGroup, _ admission: Admission) {
        state.withLock { state in
            switch admission {
            case .admit:
                state.admitted -= 1
                let holding = (state.byGroup[group] ?? 1) - 1
                state.byGroup[group] = holding > 0 ? holding : nil
            case .refuse:
                state.refused -= 1
            case .drop:
                break
            }
        }
    }
}
