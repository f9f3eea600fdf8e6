import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Hands memory freed by a log compaction back to the system. Log compaction frees the entries of
/// a whole snapshot interval at once, allocated and freed on different threads (glibc keeps
/// per-thread arenas), and glibc otherwise keeps much of it mapped: with a million keys loaded,
/// resident memory stayed about 10% above what the node held. Runs off the node loop;
/// `malloc_trim` locks each arena in turn.
func releaseFreedMemory() {
  #if canImport(Glibc)
    guard let trim = mallocTrim else { return }
    DispatchQueue.global(qos: .utility).async { _ = trim(0) }
  #endif
}

/// Hands back the history a compaction of the store dropped. It is not freed when the compaction
/// applies: the read view, the watch hub and a snapshot being written each hold the store from
/// before it, and let go of it over the next seconds (a snapshot only when it is written). With a
/// million keys overwritten once and compacted, one trim a second after the compaction returned
/// almost nothing and resident memory stayed at 4.3–5.4× the live data for good; trims one, two,
/// four and eight seconds after brought it to 2.0× within four seconds (`bench/memory.sh`). A
/// newer compaction takes over the schedule, so that frequent automatic compactions cause at most
/// a trim or two a second.
func releaseMemoryFreedByCompaction() {
  #if canImport(Glibc)
    guard let trim = mallocTrim else { return }
    let generation = compactionTrims.add(1, ordering: .relaxed).newValue
    for seconds in [1, 2, 4, 8] {
      DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + .seconds(seconds)) {
        guard seconds == 8 || compactionTrims.load(ordering: .relaxed) == generation else { return }
        _ = trim(0)
      }
    }
  #endif
}

/// Counts the schedules of `releaseMemoryFreedByCompaction`.
private let compactionTrims = Atomic<Int>(0)

#if canImport(Glibc)
  /// glibc's `malloc_trim`, looked up at run time: Swift's Glibc module does not export malloc.h.
  private let mallocTrim: (@convention(c) (Int) -> Int32)? = dlsym(
    UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim"
  )
  .map { unsafeBitCast($0, to: (@convention(c) (Int) -> Int32).self) }
#endif
