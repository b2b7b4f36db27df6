import CZeroMQ
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A libzmq failure: the operation and zmq's own message for errno.
public struct ZeroMQError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let code: Int32

    public init(_ operation: String, code: Int32 = zmq_errno()) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: zmq_strerror(code)))" }
    /// The call would block (non-blocking receive or send with nothing to do).
    public var wouldBlock: Bool { code == EAGAIN }
}

/// Owns a zmq context; sockets keep their context alive.
public final class ZeroMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init() throws {
        guard let handle = zmq_ctx_new() else { throw ZeroMQError("zmq_ctx_new") }
        self.handle = handle
    }

    deinit { zmq_ctx_term(handle) }
}

/// Owns one zmq socket. Not thread-safe (as zmq sockets are not): use it
/// from one thread at a time.
public final class ZeroMQSocket: @unchecked Sendable {
    public enum Kind { case router, dealer, reply }

    let context: ZeroMQContext
    let handle: UnsafeMutableRawPointer
    /// Largest accepted message part; larger ones are dropped by libzmq,
    /// which disconnects the peer (ZMQ_MAXMSGSIZE).
    public static let maximumMessageBytes: Int64 = 8 << 20

    public init(_ context: ZeroMQContext, _ kind: Kind) throws {
        let type = switch kind { case .router: ZMQ_ROUTER; case .dealer: ZMQ_DEALER; case .reply: ZMQ_REP }
        guard let handle = zmq_socket(context.handle, type) else {
            throw ZeroMQError("zmq_socket")
        }
        self.context = context
        self.handle = handle
        try set(ZMQ_LINGER, Int32(0))
        try set(ZMQ_MAXMSGSIZE, Self.maximumMessageBytes)
        if kind == .router { try set(ZMQ_ROUTER_MANDATORY, Int32(1)) }
    }

    deinit { zmq_close(handle) }

    public func set(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) == 0 else { throw ZeroMQError("zmq_setsockopt(\(option))") }
    }

    public func set(_ option: Int32, _ value: Int64) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) == 0 else { throw ZeroMQError("zmq_setsockopt(\(option))") }
    }

    public func set(_ option: Int32, _ bytes: Data) throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, bytes.count) }
        guard rc == 0 else { throw ZeroMQError("zmq_setsockopt(\(option))") }
    }

    /// The routing id a DEALER presents to a ROUTER.
    public func setIdentity(_ identity: String) throws { try set(ZMQ_ROUTING_ID, Data(identity.utf8)) }

    public func bind(_ endpoint: String) throws {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZeroMQError("zmq_bind(\(endpoint))") }
    }

    public func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZeroMQError("zmq_connect(\(endpoint))") }
    }

    /// The endpoint actually bound (e.g. the port chosen for tcp://127.0.0.1:*).
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Sends the parts as one multipart message.
    public func send(_ parts: [Data], dontWait: Bool = false) throws {
        for (i, part) in parts.enumerated() {
            var flags: Int32 = i < parts.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            let rc = part.withUnsafeBytes { zmq_send(handle, $0.baseAddress, part.count, flags) }
            guard rc >= 0 else { throw ZeroMQError("zmq_send") }
        }
    }

    /// Receives one multipart message; nil when none arrives within
    /// `timeoutMilliseconds` (-1 waits for ever), or when `wakeOn` (a file
    /// descriptor another thread writes to) becomes readable first.
    public func receive(timeoutMilliseconds: Int, wakeOn descriptor: Int32? = nil) throws -> [Data]? {
        guard try poll(timeoutMilliseconds: timeoutMilliseconds, wakeOn: descriptor) else { return nil }
        // One message object, initialised and closed in place: never copied or moved.
        let message = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        defer { message.deallocate() }
        var parts: [Data] = []
        repeat {
            guard zmq_msg_init(message) == 0 else { throw ZeroMQError("zmq_msg_init") }
            defer { zmq_msg_close(message) }
            var rc: Int32
            repeat { rc = zmq_msg_recv(message, handle, 0) } while rc < 0 && zmq_errno() == EINTR
            guard rc >= 0 else { throw ZeroMQError("zmq_msg_recv") }
            parts.append(Data(bytes: zmq_msg_data(message), count: zmq_msg_size(message)))
            if zmq_msg_more(message) == 0 { break }
        } while true
        return parts
    }

    /// True when a message can be received within the timeout (false early
    /// when `wakeOn` becomes readable).
    public func poll(timeoutMilliseconds: Int, wakeOn descriptor: Int32? = nil) throws -> Bool {
        var items = [zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)]
        if let descriptor { items.append(zmq_pollitem_t(socket: nil, fd: descriptor, events: Int16(ZMQ_POLLIN), revents: 0)) }
        let rc = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
        if rc < 0 {
            if zmq_errno() == EINTR { return false }
            throw ZeroMQError("zmq_poll")
        }
        return items[0].revents & Int16(ZMQ_POLLIN) != 0
    }
}
