import COpenBLAS
#if os(Linux)
import CMalloc
#endif
import Dispatch
import Foundation

/// Process-wide compute settings: how many threads the non-GEMM kernels
/// split their work over, and how many OpenBLAS uses.
///
/// Set once at start-up with ``configure(threads:)`` (or the `PSAD_THREADS`
/// environment variable). Kernels partition work into contiguous ranges that
/// depend only on the thread count, so results are bit-identical for a fixed
/// count and OpenBLAS kernel (another kernel sums GEMMs in another order:
/// README, "What is reproducible where").
public enum Compute {
    nonisolated(unsafe) private static var _threads: Int = {
        let value = ProcessInfo.processInfo.environment["PSAD_THREADS"].flatMap(Int.init)
            ?? ProcessInfo.processInfo.activeProcessorCount
        let threads = max(1, value)
        openblas_set_num_threads(Int32(threads))
        // Every process that runs a kernel keeps its freed memory, whether or
        // not it called configure(threads:) (a sweep's worker takes its count
        // from PSAD_THREADS and never did: its training steps page-faulted
        // their buffers afresh every step).
        retainFreedMemory()
        return threads
    }()

    /// Threads used by the kernels (and by OpenBLAS); 1 inside a part of
    /// ``splitAcrossThreads(_:_:)``.
    public static var threads: Int { pthread_getspecific(oneThreadKey) == nil ? _threads : 1 }

    /// The configured count, whichever thread asks.
    static var configuredThreads: Int { _threads }

    /// Whether the calling thread runs a part of a split (or ``onOneThread(_:)``).
    static var isOnOneThread: Bool { pthread_getspecific(oneThreadKey) != nil }

    /// Whether ``splitAcrossThreads(_:_:)`` splits at all (default true;
    /// `PSAD_SPLIT_BY_IMAGE=0` turns it off, for measuring what it gains).
    /// Off, every part runs as one on the calling thread, each GEMM over
    /// all threads.
    nonisolated(unsafe) public static var splitByImage: Bool = ProcessInfo.processInfo.environment["PSAD_SPLIT_BY_IMAGE"] != "0"

    /// Marks the threads running a part of ``splitAcrossThreads(_:_:)``.
    private static let oneThreadKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// Sets the thread count for kernels and OpenBLAS. Call before any work starts.
    /// Also keeps freed memory in the process (see ``retainFreedMemory()``).
    public static func configure(threads: Int) {
        _threads = max(1, threads)
        openblas_set_num_threads(Int32(_threads))
        retainFreedMemory()
    }

    /// Stops glibc's allocator from handing large freed blocks back to the
    /// kernel. Training steps allocate and free the same tens of megabytes
    /// every step; by default each such block is a fresh `mmap`, and the
    /// page faults that zero it cost more than the arithmetic (segment-train
    /// ran 1.9x slower without this, measured). Blocks below 1 GiB now come
    /// from the heap and stay; the process keeps its peak instead, which it
    /// needs again at the next step anyway.
    ///
    /// And one arena for every thread: a stage runs on a thread other than
    /// the main one (a worker's stage threads), and glibc gives such a
    /// thread an arena of 64 MiB heaps of its own. A segment-train job that was
    /// the first in its worker process took 275 s there and 203 s with one
    /// arena, the same bytes out (BENCHMARKS.md, "The default sweep within
    /// 15 minutes"). Takes effect for threads that have not yet allocated,
    /// so a process calls this before it starts any (the worker first thing
    /// in `run`).
    public static func retainFreedMemory() {
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
        _ = mallopt(M_TRIM_THRESHOLD, Int32.max)
        _ = mallopt(M_ARENA_MAX, 1)
        #endif
    }

    /// Hands the allocator's free memory back to the kernel now (between
    /// stages, so that each stage's resident peak is its own).
    public static func releaseFreedMemory() {
        #if os(Linux)
        _ = malloc_trim(0)
        #endif
    }

    /// Runs `body` over `0..<count` split into at most `threads` contiguous
    /// ranges. Work smaller than `grain` items per range runs on the caller.
    /// Each index is visited exactly once; ranges never overlap, so bodies
    /// writing disjoint outputs need no synchronisation.
    public static func parallelFor(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(grain, 1)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            let work = RangeWork(run: body)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = count * chunk / chunks
                let end = count * (chunk + 1) / chunks
                if start < end { work.run(start..<end) }
            }
        }
    }
}

extension Compute {
    /// `[body(0), body(1), ...]`, computed in parallel over contiguous ranges.
    public static func parallelMap<T>(_ count: Int, _ body: (Int) -> T) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            let base = buffer.baseAddress
            let box = UncheckedPointer(raw: UnsafeMutableRawPointer(base))
            parallelFor(count) { range in
                let typed = box.raw!.assumingMemoryBound(to: T.self)
                for i in range { (typed + i).initialize(to: body(i)) }
            }
            initialized = count
        }
    }
}

extension Compute {
    /// `body` over `0..<count` split into one contiguous range per thread,
    /// each range on its own thread with every kernel and OpenBLAS call inside
    /// it on that thread alone; the results in range order.
    ///
    /// For work made of many small GEMMs over independent items (a backbone
    /// over a batch of images): one single-threaded GEMM per core runs faster
    /// than each GEMM split over the cores, and the kernels between GEMMs
    /// (im2col, pooling) run in parallel without waiting on OpenBLAS's
    /// spinning threads. OpenBLAS's thread count is process-wide: it is 1
    /// until the call returns, and a GEMM that another thread starts outside
    /// any split meanwhile waits until it ends (``BLASThreads``). Nested calls
    /// run their body directly.
    public static func splitAcrossThreads<T>(_ count: Int, _ body: (Range<Int>) -> T) -> [T] {
        let parts = splitByImage ? min(threads, count) : 1
        guard parts > 1 else { return [body(0..<count)] }
        BLASThreads.enterSingle()
        defer { BLASThreads.leaveSingle() }
        return parallelMap(parts) { k in
            let marked = pthread_getspecific(oneThreadKey) != nil
            if !marked { pthread_setspecific(oneThreadKey, UnsafeRawPointer(bitPattern: 1)) }
            defer { if !marked { pthread_setspecific(oneThreadKey, nil) } }
            return body((count * k / parts)..<(count * (k + 1) / parts))
        }
    }

    /// `body` with every kernel and OpenBLAS call on the calling thread
    /// alone: one item computed as each item of a ``mapAcrossThreads(_:_:)``
    /// over several is (the kernels' ranges follow the thread count, so the
    /// digits do too).
    public static func onOneThread<T>(_ body: () -> T) -> T {
        guard pthread_getspecific(oneThreadKey) == nil else { return body() }
        pthread_setspecific(oneThreadKey, UnsafeRawPointer(bitPattern: 1))
        BLASThreads.enterSingle()
        defer {
            pthread_setspecific(oneThreadKey, nil)
            BLASThreads.leaveSingle()
        }
        return body()
    }

    /// `[body(0), body(1), ...]` with the items split as in
    /// ``splitAcrossThreads(_:_:)``: each item's kernels and GEMMs on one thread.
    public static func mapAcrossThreads<T>(_ count: Int, _ body: (Int) -> T) -> [T] {
        splitAcrossThreads(count) { $0.map(body) }.flatMap { $0 }
    }

    /// sum over `0..<count` of `body(range)` for a fixed split into `chunks`
    /// ranges, added in order: the same value for any thread count.
    public static func deterministicSum(_ count: Int, chunks: Int = 64, _ body: (Range<Int>) -> Double) -> Double {
        let n = max(1, min(chunks, count))
        return parallelMap(n) { k in body((count * k / n)..<(count * (k + 1) / n)) }.reduce(0, +)
    }
}

/// OpenBLAS's thread count is one process-wide setting, and its GEMMs' digits
/// follow it (a 480x64x80 product differs in the last bits between one thread
/// and two: the threaded driver partitions the matrices, and the edge
/// kernels sum in another order). Two regimes therefore never overlap:
/// single (inside ``Compute/splitAcrossThreads(_:_:)`` or
/// ``Compute/onOneThread(_:)``, OpenBLAS on one thread, held until the last
/// such call in the process returns) and full (a GEMM called outside them,
/// on all ``Compute/threads``). A GEMM waits for the other regime to end.
/// Without this, a split ending on one thread put OpenBLAS back on all
/// threads while another thread's split was still running, and that split's
/// GEMMs came out in other digits (seen in the test suite, which runs tests
/// concurrently; a worker computes one stage at a time and never waits here).
enum BLASThreads {
    private static let condition = NSCondition()
    nonisolated(unsafe) private static var single = 0
    nonisolated(unsafe) private static var full = 0

    static func enterSingle() {
        condition.lock()
        while full > 0 { condition.wait() }
        single += 1
        if single == 1 { openblas_set_num_threads(1) }
        condition.unlock()
    }

    static func leaveSingle() {
        condition.lock()
        single -= 1
        if single == 0 {
            openblas_set_num_threads(Int32(Compute.configuredThreads))
            condition.broadcast()
        }
        condition.unlock()
    }

    /// `body` (one OpenBLAS call) in the regime the calling thread is in:
    /// directly inside a split part, else in the full regime.
    @inline(__always)
    static func call<T>(_ body: () -> T) -> T {
        guard Compute.configuredThreads > 1, !Compute.isOnOneThread else { return body() }
        condition.lock()
        while single > 0 { condition.wait() }
        full += 1
        condition.unlock()
        defer {
            condition.lock()
            full -= 1
            if full == 0 { condition.broadcast() }
            condition.unlock()
        }
        return body()
    }
}

private struct UncheckedPointer: @unchecked Sendable { let raw: UnsafeMutableRawPointer? }

/// The body of a ``Compute/parallelFor(_:grain:_:)``. Callers promise that
/// the ranges write disjoint memory, which is what makes sharing it sound.
private struct RangeWork: @unchecked Sendable {
    let run: (Range<Int>) -> Void
}

extension Compute {
    /// OpenBLAS's build configuration (version, target core, threading).
    public static var blasConfiguration: String { String(cString: openblas_get_config()) }

    /// The machine kind for comparing results: the processor architecture
    /// and the OpenBLAS kernels running (they follow the CPU, or
    /// `OPENBLAS_CORETYPE`) and the kernels' thread count (their ranges
    /// follow it, and so do the digits), e.g. `x86_64 OpenBLAS Zen, 2
    /// threads`. Machines of one kind are expected to compute the same
    /// bytes for a stage (the end-to-end tests check every stage on two workers).
    public static var machineKind: String {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(machine) OpenBLAS \(String(cString: openblas_get_corename())), \(_threads) threads"
    }
}
