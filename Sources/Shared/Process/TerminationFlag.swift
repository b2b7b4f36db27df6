import Dispatch
import Foundation
import Logging
import Synchronization

/// Set when the process receives one of the given signals (SIGTERM and
/// SIGINT by default), which are then no longer fatal: a serving loop reads
/// the flag and stops or drains in its own time. It counts the signals, so
/// that a second one can mean "now" (a worker hands its stage back).
public final class TerminationFlag: @unchecked Sendable {
    private let value = Atomic<Bool>(false)
    /// When the first signal came (seconds since 1970, as bits; 0: not yet).
    private let since = Atomic<UInt64>(0)
    private let received = Atomic<Int>(0)
    /// Kept alive with the flag; never changed after init (hence unchecked Sendable).
    private var sources: [DispatchSourceSignal] = []

    public init(signals: [Int32] = [SIGTERM, SIGINT]) {
        var installed: [DispatchSourceSignal] = []
        for sig in signals {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in self?.set() }
            source.resume()
            installed.append(source)
        }
        sources = installed
    }

    public var requested: Bool { value.load(ordering: .relaxed) }

    /// How many times the flag was set (signals and ``set()`` calls).
    public var count: Int { received.load(ordering: .relaxed) }

    /// Seconds since the first signal (nil before one).
    public var secondsSinceRequest: Double? {
        let bits = since.load(ordering: .relaxed)
        return bits == 0 ? nil : monotonicSeconds() - Double(bitPattern: bits)
    }

    /// Sets the flag from code (as a signal would).
    public func set() {
        _ = since.compareExchange(expected: 0, desired: monotonicSeconds().bitPattern, ordering: .relaxed)
        received.add(1, ordering: .relaxed)
        value.store(true, ordering: .relaxed)
    }
}

/// swift-log to standard error at the level `$PSAD_LOG` names (info by default).
public enum LogSetup {
    public static func bootstrap() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["PSAD_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
    }
}
