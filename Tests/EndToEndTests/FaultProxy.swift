import Foundation

/// A TCP proxy between workers and the coordinator that injects network
/// faults: it can hold traffic in one direction or both (a partition: the
/// bytes wait in the kernel's buffers, as TCP keeps retransmitting across a
/// broken link), cut every connection (and refuse new ones), and heal.
final class FaultProxy: @unchecked Sendable {
    enum Direction: Hashable { case toCoordinator, toWorkers }

    private let listener: Int32
    let port: UInt16
    private let target: UInt16
    private let lock = NSLock()
    private var held: Set<Direction> = []
    private var refusing = false
    private var connections: [(worker: Int32, coordinator: Int32)] = []
    private var closed = false

    /// Listens on a free loopback port and forwards to the coordinator's `tcp://127.0.0.1:PORT`.
    init(to endpoint: String) throws {
        guard let portText = endpoint.split(separator: ":").last, let target = UInt16(portText) else {
            throw ClusterError("FaultProxy: '\(endpoint)' has no port")
        }
        self.target = target
        let listening = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listening, 16) == 0 else { throw ClusterError("FaultProxy: bind/listen failed (errno \(errno))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listening, $0, &length) } }
        listener = listening
        port = UInt16(bigEndian: address.sin_port)
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { stop() }

    var endpoint: String { "tcp://127.0.0.1:\(port)" }

    /// Stops forwarding in these directions (bytes wait, nothing is lost).
    func hold(_ directions: Set<Direction>) { lock.withLock { held = directions } }

    /// Closes every connection and refuses new ones until `heal`.
    func cut() {
        lock.withLock {
            refusing = true
            for c in connections { shutdown(c.worker, Int32(SHUT_RDWR)); shutdown(c.coordinator, Int32(SHUT_RDWR)) }
        }
    }

    /// Forwards everything again, and accepts connections again.
    func heal() { lock.withLock { held = []; refusing = false } }

    func stop() {
        lock.withLock {
            guard !closed else { return }
            closed = true
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
            for c in connections { shutdown(c.worker, Int32(SHUT_RDWR)); shutdown(c.coordinator, Int32(SHUT_RDWR)) }
        }
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return a
    }

    private func acceptLoop() {
        while true {
            let worker = accept(listener, nil, nil)
            if worker < 0 {
                if lock.withLock({ closed }) { return }
                continue
            }
            if lock.withLock({ refusing || closed }) { close(worker); continue }
            let coordinator = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: target)
            let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(coordinator, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard connected == 0 else { close(worker); close(coordinator); continue }
            lock.withLock { connections.append((worker, coordinator)) }
            Thread.detachNewThread { [self] in pump(from: worker, to: coordinator, .toCoordinator) }
            Thread.detachNewThread { [self] in pump(from: coordinator, to: worker, .toWorkers) }
        }
    }

    /// Copies bytes one way while that way is not held; ends both sockets when either side ends.
    private func pump(from source: Int32, to sink: Int32, _ direction: Direction) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        defer {
            shutdown(source, Int32(SHUT_RDWR)); shutdown(sink, Int32(SHUT_RDWR))
            lock.withLock { connections.removeAll { $0.worker == source || $0.coordinator == source } }
        }
        while true {
            if lock.withLock({ closed }) { return }
            if lock.withLock({ held.contains(direction) }) { Thread.sleep(forTimeInterval: 0.01); continue }
            var ready = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 50) >= 0 else { return }
            if ready.revents == 0 { continue }
            let n = read(source, &buffer, buffer.count)
            if n <= 0 { return }
            var sent = 0
            while sent < n {
                let m = buffer.withUnsafeBytes { write(sink, $0.baseAddress! + sent, n - sent) }
                if m <= 0 { return }
                sent += m
            }
        }
    }
}
