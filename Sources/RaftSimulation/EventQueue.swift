/// A min-heap of events by (time, insertion order): ties break by the order events were scheduled,
/// so a seed always produces the same interleaving.
struct EventQueue<Payload> {
  private struct Item {
    var time: UInt64
    var sequence: UInt64
    var payload: Payload

    func precedes(_ other: Item) -> Bool {
      time != other.time ? time < other.time : sequence < other.sequence
    }
  }

  private var heap: [Item] = []
  private var nextSequence: UInt64 = 0

  var isEmpty: Bool { heap.isEmpty }

  var count: Int { heap.count }

  mutating func schedule(at time: UInt64, _ payload: Payload) {
    heap.append(Item(time: time, sequence: nextSequence, payload: payload))
    nextSequence += 1
    var child = heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard heap[child].precedes(heap[parent]) else { break }
      heap.swapAt(child, parent)
      child = parent
    }
  }

  mutating func next() -> (time: UInt64, payload: Payload)? {
    guard !heap.isEmpty else { return nil }
    heap.swapAt(0, heap.count - 1)
    let item = heap.removeLast()
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < heap.count && heap[left].precedes(heap[smallest]) { smallest = left }
      if right < heap.count && heap[right].precedes(heap[smallest]) { smallest = right }
      guard smallest != parent else { break }
      heap.swapAt(parent, smallest)
      parent = smallest
    }
    return (item.time, item.payload)
  }
}
