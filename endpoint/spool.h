// ResultSpool: the endpoint's durable store for results the service has not acknowledged yet,
// so they survive a restart of loom-endpoint (kill -9 included) and are sent again.
//
// On disk it is an append-only log cut into segment files `seg-<12 digits>.log` (names sort in
// write order), each an 8-byte magic followed by records
//   [u32 payload length][u8 type][u32 CRC-32C of length, type and payload][payload]   (little endian)
// type 1 is a result (a serialized v1::TaskResult), type 2 an ack (a serialized v1::ResultAck).
// Append() costs one write() (plus an fdatasync() when SpoolOptions::fsync). Ack() forgets the
// results at once but holds its ack record for the next Append's write (FlushAcks() writes it
// alone; so do the destructor, and Ack() once kMaxHeldAcks wait): an endpoint's results and
// acks alternate, and one write a round instead of two is what many endpoints on one host
// notice. An ack record lost to a crash only brings its results back on replay: they are sent
// again and the service, which has them, acknowledges them again.
//
// Segments are deleted oldest first only, once every result in them is acknowledged: an ack record
// may stand in a later segment than its result, and deleting a later segment before an earlier one
// would bring acknowledged results back on replay. So that one result the service never
// acknowledges cannot pin the log, results left in the oldest segment are copied forward to the
// current one when most of the log is garbage.
//
// Open() replays the segments in order (a torn or corrupt record ends the replay of its segment
// with a warning; everything before it is kept), then rewrites the pending results into fresh
// segments and deletes the old ones, so the log does not grow across restarts.
//
// Not thread-safe: one thread (the endpoint's loop) owns it. One directory belongs to one
// endpoint: Open() takes an exclusive flock() on `<dir>/LOCK`, held until destruction.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom::endpoint {

struct SpoolOptions {
  std::string dir;                          // created if missing
  int64_t segment_bytes = 4 * 1024 * 1024;  // a new segment is started before one would grow past this
  bool fsync = false;                       // fdatasync() every write: survives power loss, not just process death
  int64_t max_bytes = int64_t{1} << 30;     // bound on the serialized size of unacknowledged results
};

struct SpoolStats {
  int64_t pending_count = 0;  // results not acknowledged
  int64_t pending_bytes = 0;  // their serialized size (what max_bytes bounds)
  int64_t segments = 0;       // segment files, the one being written included
  int64_t disk_bytes = 0;     // their total size
  int64_t replay_errors = 0;  // torn, corrupt or unreadable records Open() skipped
};

class ResultSpool {
 public:
  // Creates `options.dir` if needed, locks it, replays and compacts it. Fails with
  // kFailedPrecondition while another ResultSpool (in any process) has the directory open.
  static Result<std::unique_ptr<ResultSpool>> Open(SpoolOptions options);

  ~ResultSpool();
  ResultSpool(const ResultSpool&) = delete;
  ResultSpool& operator=(const ResultSpool&) = delete;

  // Appends the results in one write(). At most one result per task id is held: a result for a
  // task already pending replaces the earlier one. Fails with kResourceExhausted, writing nothing,
  // if the pending results would then exceed max_bytes (stop taking work until acks arrive).
  // A result without a task_id fails the call with kInvalidArgument, writing nothing.
  Status Append(const std::vector<v1::TaskResult>& results);
  // The same, for results already serialized (the endpoint keeps its results so): (task id, serialized v1::TaskResult)
  // pairs. The payloads are written and kept as they are; an empty task id fails as above.
  Status AppendSerialized(const std::vector<std::pair<std::string_view, std::string_view>>& results);

  // Forgets the pending results of these tasks; their ack record goes out with the next write
  // (see the file comment). Ids not pending are ignored. Deletes segments no longer needed.
  Status Ack(const std::vector<std::string>& task_ids);
  // Writes the held ack record, if any (one write()). The endpoint calls it once a heartbeat
  // period, so an idle endpoint's log catches up.
  Status FlushAcks();

  static constexpr int kMaxHeldAcks = 4096;

  // The pending results, in the order they were last written (compaction keeps the order; a
  // result copied forward out of an old segment counts as written then).
  std::vector<v1::TaskResult> Pending() const;

  int64_t pending_count() const { return static_cast<int64_t>(pending_.size()); }
  int64_t pending_bytes() const { return pending_bytes_; }
  SpoolStats stats() const;

  // Public for std::make_unique only: use Open().
  struct PrivateTag {
   private:
    PrivateTag() = default;
    friend class ResultSpool;
  };
  ResultSpool(SpoolOptions options, PrivateTag);

 private:
  // A closed-on-destruction file descriptor.
  class Fd {
   public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { Reset(); }
    Fd(Fd&& other) noexcept : fd_(other.Release()) {}
    Fd& operator=(Fd&& other) noexcept;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    int Release();
    void Reset();

   private:
    int fd_ = -1;
  };

  struct Entry {
    std::string task_id;
    std::string payload;  // the serialized v1::TaskResult
    uint64_t segment = 0;
  };
  struct Segment {
    int64_t bytes = 0;  // file size
    int64_t live = 0;   // pending results written in it
  };
  using EntryList = std::list<Entry>;

  Status Lock();
  Status Replay();
  Status ReplaySegment(uint64_t seq);
  Status StartSegment();
  // Writes `buf` to the current segment, first starting a new one if `buf` would not fit.
  Status Write(const std::string& buf, bool force_sync);
  Status SyncDir();
  // Copies every pending result written in segments up to `last_seq` into the current segment.
  Status CopyForward(uint64_t last_seq, bool force_sync);
  // Deletes fully acknowledged segments from the oldest on; copies stragglers forward when most
  // of the log is garbage. Failures are logged: the caller's record is already written.
  void Collect();
  void AddPending(std::string task_id, std::string payload, uint64_t seq);
  void RemovePending(EntryList::iterator it);
  std::string SegmentPath(uint64_t seq) const;
  uint64_t current_seq() const { return segments_.rbegin()->first; }

  const SpoolOptions options_;
  Fd lock_fd_;
  Fd segment_fd_;               // the current segment (segments_.rbegin()), opened O_APPEND
  bool start_segment_ = false;  // a failed write left the current segment in doubt: start a new one
  uint64_t next_seq_ = 1;
  std::map<uint64_t, Segment> segments_;  // every segment file, by sequence number
  int64_t disk_bytes_ = 0;
  EntryList pending_;  // in write order, hence grouped by segment, oldest first
  std::unordered_map<std::string, EntryList::iterator> by_id_;
  int64_t pending_bytes_ = 0;
  int64_t replay_errors_ = 0;
  v1::ResultAck held_acks_;  // acknowledged, not yet written
};

}  // namespace loom::endpoint
