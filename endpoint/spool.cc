#include "endpoint/spool.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <string_view>
#include <system_error>
#include <utility>

#include "common/util.h"

namespace loom::endpoint {
namespace {

constexpr char kMagic[8] = {'L', 'O', 'O', 'M', 'S', 'P', 'L', '1'};
constexpr size_t kMagicBytes = sizeof(kMagic);
constexpr size_t kRecordHeaderBytes = 9;  // u32 length, u8 type, u32 crc
constexpr uint8_t kResultRecord = 1;
constexpr uint8_t kAckRecord = 2;

// CRC-32C (Castagnoli), reflected, table driven.
constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

// Extends `crc` (0 to start) over n bytes: Crc32c(Crc32c(0, a), b) == Crc32c(0, a + b).
uint32_t Crc32c(uint32_t crc, const char* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ static_cast<uint8_t>(p[i])) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

void AppendRecord(std::string* buf, uint8_t type, std::string_view payload) {
  LOOM_CHECK(payload.size() <= INT32_MAX);
  char header[kRecordHeaderBytes];
  PutU32(header, static_cast<uint32_t>(payload.size()));
  header[4] = static_cast<char>(type);
  const uint32_t crc = Crc32c(Crc32c(0, header, 5), payload.data(), payload.size());
  PutU32(header + 5, crc);
  buf->append(header, kRecordHeaderBytes);
  buf->append(payload);
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// A full disk is the caller's cue to stop taking work, like a full spool.
Status IoError(const std::string& what, int err) {
  if (err == ENOSPC || err == EDQUOT) {
    return ResourceExhausted(what + ": " + ErrnoText(err) + "; free space on the spool directory's file system");
  }
  return Internal(what + ": " + ErrnoText(err));
}

// Returns the sequence number of a segment file name `seg-<digits>.log`, 0 for any other name.
uint64_t ParseSegmentName(std::string_view name) {
  constexpr std::string_view kPrefix = "seg-";
  constexpr std::string_view kSuffix = ".log";
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix)) {
    return 0;
  }
  std::string_view digits = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return 0;
  uint64_t seq = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), seq);
  if (ec != std::errc() || end != digits.data() + digits.size()) return 0;
  return seq;
}

Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open spool segment '" + path + "'", errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return IoError("cannot stat spool segment '" + path + "'", err);
  }
  out->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = ::read(fd, out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return IoError("cannot read spool segment '" + path + "'", err);
    }
    if (n == 0) break;  // shrank under us; replay what is there
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  ::close(fd);
  return Status::Ok();
}

Status WriteFully(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return IoError("write failed", errno);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

}  // namespace

ResultSpool::Fd& ResultSpool::Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = other.Release();
  }
  return *this;
}

int ResultSpool::Fd::Release() { return std::exchange(fd_, -1); }

void ResultSpool::Fd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

ResultSpool::ResultSpool(SpoolOptions options, PrivateTag) : options_(std::move(options)) {}

ResultSpool::~ResultSpool() {
  if (Status s = FlushAcks(); !s.ok()) spdlog::warn("result spool '{}': {}", options_.dir, s.ToString());
}

Result<std::unique_ptr<ResultSpool>> ResultSpool::Open(SpoolOptions options) {
  if (options.dir.empty()) return InvalidArgument("the result spool needs a directory; none was given");
  if (options.segment_bytes <= 0 || options.max_bytes <= 0) {
    return InvalidArgument("result spool '" + options.dir + "': segment_bytes (" +
                           std::to_string(options.segment_bytes) + ") and max_bytes (" +
                           std::to_string(options.max_bytes) + ") must be positive");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return Internal("cannot create spool directory '" + options.dir + "': " + ec.message());
  auto spool = std::make_unique<ResultSpool>(std::move(options), PrivateTag{});
  LOOM_RETURN_IF_ERROR(spool->Lock());
  LOOM_RETURN_IF_ERROR(spool->Replay());
  return spool;
}

Status ResultSpool::Lock() {
  const std::string path = options_.dir + "/LOCK";
  // O_CLOEXEC matters: a worker process that inherited the lock would keep it after the endpoint dies.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot open spool lock file '" + path + "'", errno);
  lock_fd_ = Fd(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) return IoError("cannot lock '" + path + "'", err);
    std::string holder = ReadFileOrEmpty(path);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return FailedPrecondition("another loom-endpoint with this spool directory is running" +
                              (holder.empty() ? std::string() : " (pid " + holder + ")") + ": '" + path +
                              "' is locked; give each endpoint its own spool directory");
  }
  // Who holds the lock, for the message above; best effort.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    spdlog::debug("cannot write the pid into '{}': {}", path, ErrnoText(errno));
  }
  return Status::Ok();
}

std::string ResultSpool::SegmentPath(uint64_t seq) const {
  char name[48];
  std::snprintf(name, sizeof(name), "seg-%012llu.log", static_cast<unsigned long long>(seq));
  return options_.dir + "/" + name;
}

Status ResultSpool::Replay() {
  std::vector<uint64_t> old;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(options_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (uint64_t seq = ParseSegmentName(it->path().filename().string()); seq != 0) old.push_back(seq);
  }
  if (ec) return Internal("cannot list spool directory '" + options_.dir + "': " + ec.message());
  std::sort(old.begin(), old.end());
  for (uint64_t seq : old) LOOM_RETURN_IF_ERROR(ReplaySegment(seq));
  if (!old.empty()) next_seq_ = old.back() + 1;
  LOOM_RETURN_IF_ERROR(StartSegment());
  if (old.empty()) return Status::Ok();

  // Compact: rewrite what is pending into fresh segments, make them durable, then delete the old
  // ones oldest first. A crash in between leaves results twice on disk, and replaying the copy
  // replaces the original, so nothing is lost or duplicated.
  LOOM_RETURN_IF_ERROR(CopyForward(old.back(), /*force_sync=*/true));
  LOOM_RETURN_IF_ERROR(SyncDir());
  Collect();
  spdlog::info("result spool '{}': {} unacknowledged result(s) ({} bytes) recovered from {} segment(s)", options_.dir,
               pending_.size(), pending_bytes_, old.size());
  return Status::Ok();
}

Status ResultSpool::ReplaySegment(uint64_t seq) {
  const std::string path = SegmentPath(seq);
  std::string data;
  LOOM_RETURN_IF_ERROR(ReadWholeFile(path, &data));
  segments_[seq] = Segment{static_cast<int64_t>(data.size()), 0};
  disk_bytes_ += static_cast<int64_t>(data.size());
  // A file shorter than the magic was cut off right after it was created: nothing in it yet.
  if (data.size() < kMagicBytes && std::memcmp(data.data(), kMagic, data.size()) == 0) return Status::Ok();
  if (data.size() < kMagicBytes || std::memcmp(data.data(), kMagic, kMagicBytes) != 0) {
    // Refuse rather than delete it with the compaction: it may be a newer format's results.
    return FailedPrecondition("'" + path + "' is not a result spool segment this loom-endpoint can read; move it " +
                              "out of the spool directory");
  }
  size_t pos = kMagicBytes;
  while (pos < data.size()) {
    const size_t left = data.size() - pos;
    const char* p = data.data() + pos;
    auto drop_rest = [&](const char* why) {
      ++replay_errors_;
      spdlog::warn(
          "result spool segment '{}': {} at offset {}; the last {} byte(s) of the segment are dropped "
          "(a crash mid-write leaves this; results after it are lost)",
          path, why, pos, left);
    };
    if (left < kRecordHeaderBytes) {
      drop_rest("torn record header");
      break;
    }
    const uint32_t len = GetU32(p);
    const auto type = static_cast<uint8_t>(p[4]);
    if (len > left - kRecordHeaderBytes || len > INT32_MAX) {
      drop_rest("torn record (its length runs past the end)");
      break;
    }
    if (Crc32c(Crc32c(0, p, 5), p + kRecordHeaderBytes, len) != GetU32(p + 5)) {
      drop_rest("checksum mismatch");
      break;
    }
    const char* payload = p + kRecordHeaderBytes;
    if (type == kResultRecord) {
      v1::TaskResult r;
      if (r.ParseFromArray(payload, static_cast<int>(len)) && !r.task_id().empty()) {
        AddPending(r.task_id(), std::string(payload, len), seq);
      } else {
        ++replay_errors_;
        spdlog::warn("result spool segment '{}': unparseable result at offset {}; skipped", path, pos);
      }
    } else if (type == kAckRecord) {
      v1::ResultAck ack;
      if (ack.ParseFromArray(payload, static_cast<int>(len))) {
        for (const auto& id : ack.task_ids()) {
          if (auto it = by_id_.find(id); it != by_id_.end()) RemovePending(it->second);
        }
      } else {
        ++replay_errors_;
        spdlog::warn("result spool segment '{}': unparseable ack at offset {}; skipped", path, pos);
      }
    } else {
      ++replay_errors_;
      spdlog::warn("result spool segment '{}': unknown record type {} at offset {}; skipped", path, type, pos);
    }
    pos += kRecordHeaderBytes + len;
  }
  return Status::Ok();
}

Status ResultSpool::StartSegment() {
  const uint64_t seq = next_seq_++;
  const std::string path = SegmentPath(seq);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create spool segment '" + path + "'", errno);
  Fd file(fd);
  if (Status s = WriteFully(fd, kMagic, kMagicBytes); !s.ok()) {
    ::unlink(path.c_str());
    return Status(s.code(), "spool segment '" + path + "': " + s.message());
  }
  segment_fd_ = std::move(file);
  segments_[seq] = Segment{static_cast<int64_t>(kMagicBytes), 0};
  disk_bytes_ += static_cast<int64_t>(kMagicBytes);
  start_segment_ = false;
  if (options_.fsync) return SyncDir();
  return Status::Ok();
}

Status ResultSpool::Write(const std::string& buf, bool force_sync) {
  const auto size = static_cast<int64_t>(buf.size());
  const Segment& last = segments_.rbegin()->second;
  if (start_segment_ ||
      (last.bytes > static_cast<int64_t>(kMagicBytes) && last.bytes + size > options_.segment_bytes)) {
    LOOM_RETURN_IF_ERROR(StartSegment());
  }
  Segment& cur = segments_.rbegin()->second;
  const int fd = segment_fd_.get();
  Status s = WriteFully(fd, buf.data(), buf.size());
  if (s.ok() && (force_sync || options_.fsync) && ::fdatasync(fd) != 0) s = IoError("fdatasync failed", errno);
  if (!s.ok()) {
    // Cut off whatever part did reach the file: a partial record would end the replay of this
    // segment and hide every record written after it. Later writes go to a fresh segment anyway.
    if (::ftruncate(fd, cur.bytes) != 0) {
      spdlog::warn("cannot truncate '{}' after a failed write: {}", SegmentPath(current_seq()), ErrnoText(errno));
    }
    start_segment_ = true;
    return Status(s.code(), "result spool segment '" + SegmentPath(current_seq()) + "': " + s.message());
  }
  cur.bytes += size;
  disk_bytes_ += size;
  return Status::Ok();
}

Status ResultSpool::SyncDir() {
  int fd = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open spool directory '" + options_.dir + "'", errno);
  Fd dir(fd);
  if (::fsync(fd) != 0) return IoError("cannot fsync spool directory '" + options_.dir + "'", errno);
  return Status::Ok();
}

Status ResultSpool::CopyForward(uint64_t last_seq, bool force_sync) {
  LOOM_CHECK(last_seq < current_seq());
  // pending_ is in write order, so the results to move are a prefix of it; moved ones land at the
  // back with a newer segment, which ends the loop.
  while (!pending_.empty() && pending_.front().segment <= last_seq) {
    std::string buf;
    size_t n = 0;
    for (auto it = pending_.begin(); it != pending_.end() && it->segment <= last_seq; ++it) {
      const auto record = static_cast<int64_t>(kRecordHeaderBytes + it->payload.size());
      if (n > 0 && static_cast<int64_t>(buf.size()) + record > options_.segment_bytes) break;
      AppendRecord(&buf, kResultRecord, it->payload);
      ++n;
    }
    LOOM_RETURN_IF_ERROR(Write(buf, force_sync));
    const uint64_t seq = current_seq();
    for (size_t i = 0; i < n; ++i) {
      auto it = pending_.begin();
      --segments_.at(it->segment).live;
      ++segments_.at(seq).live;
      it->segment = seq;
      pending_.splice(pending_.end(), pending_, it);
    }
  }
  return Status::Ok();
}

void ResultSpool::Collect() {
  bool deleted = false;
  for (;;) {
    while (segments_.size() > 1 && segments_.begin()->second.live == 0) {
      const std::string path = SegmentPath(segments_.begin()->first);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        // Stop here: deleting a later segment first could bring acknowledged results back.
        spdlog::warn("cannot delete acknowledged spool segment '{}': {}; will retry", path, ErrnoText(errno));
        return;
      }
      disk_bytes_ -= segments_.begin()->second.bytes;
      segments_.erase(segments_.begin());
      deleted = true;
    }
    // Mostly garbage held on disk by a few results in the oldest segment: move them forward.
    if (segments_.size() <= 1 || disk_bytes_ <= 2 * pending_bytes_ + 2 * options_.segment_bytes) break;
    if (Status s = CopyForward(segments_.begin()->first, /*force_sync=*/false); !s.ok()) {
      spdlog::warn("result spool '{}': cannot compact: {}", options_.dir, s.ToString());
      break;
    }
  }
  if (deleted && options_.fsync) {
    if (Status s = SyncDir(); !s.ok()) spdlog::warn("{}", s.ToString());
  }
}

void ResultSpool::AddPending(std::string task_id, std::string payload, uint64_t seq) {
  if (auto it = by_id_.find(task_id); it != by_id_.end()) RemovePending(it->second);
  pending_bytes_ += static_cast<int64_t>(payload.size());
  ++segments_.at(seq).live;
  pending_.push_back(Entry{task_id, std::move(payload), seq});
  by_id_.emplace(std::move(task_id), std::prev(pending_.end()));
}

void ResultSpool::RemovePending(EntryList::iterator it) {
  pending_bytes_ -= static_cast<int64_t>(it->payload.size());
  --segments_.at(it->segment).live;
  by_id_.erase(it->task_id);
  pending_.erase(it);
}

Status ResultSpool::Append(const std::vector<v1::TaskResult>& results) {
  std::vector<std::string> payloads;
  payloads.reserve(results.size());
  for (const auto& r : results) payloads.push_back(r.SerializeAsString());
  std::vector<std::pair<std::string_view, std::string_view>> refs;
  refs.reserve(results.size());
  for (size_t i = 0; i < results.size(); ++i) refs.emplace_back(results[i].task_id(), payloads[i]);
  return AppendSerialized(refs);
}

Status ResultSpool::AppendSerialized(const std::vector<std::pair<std::string_view, std::string_view>>& results) {
  if (results.empty()) return Status::Ok();
  int64_t bytes = 0;
  for (const auto& [id, payload] : results) {
    if (id.empty()) return InvalidArgument("cannot spool a result without a task_id");
    bytes += static_cast<int64_t>(payload.size());
  }
  if (pending_bytes_ + bytes > options_.max_bytes) {
    return ResourceExhausted("result spool '" + options_.dir + "' is full: " + std::to_string(pending_bytes_) +
                             " bytes of unacknowledged results held, " + std::to_string(bytes) +
                             " more would pass max_bytes " + std::to_string(options_.max_bytes) +
                             "; take no more tasks until the service acknowledges results");
  }
  std::string buf;
  buf.reserve(static_cast<size_t>(bytes) + results.size() * kRecordHeaderBytes);
  // Held acks go first, in the same write: replayed before these results, they cannot drop one
  // of them (a task's newer result comes after its ack).
  const bool with_acks = held_acks_.task_ids_size() > 0;
  if (with_acks) AppendRecord(&buf, kAckRecord, held_acks_.SerializeAsString());
  for (const auto& [id, payload] : results) AppendRecord(&buf, kResultRecord, payload);
  LOOM_RETURN_IF_ERROR(Write(buf, /*force_sync=*/false));
  if (with_acks) held_acks_.Clear();
  const uint64_t seq = current_seq();
  for (const auto& [id, payload] : results) AddPending(std::string(id), std::string(payload), seq);
  Collect();  // a replaced result may have been the last one holding the oldest segment
  return Status::Ok();
}

Status ResultSpool::Ack(const std::vector<std::string>& task_ids) {
  bool any = false;
  for (const auto& id : task_ids) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) continue;
    held_acks_.add_task_ids(id);
    RemovePending(it->second);
    any = true;
  }
  if (!any) return Status::Ok();
  Status s = held_acks_.task_ids_size() >= kMaxHeldAcks ? FlushAcks() : Status::Ok();
  Collect();
  return s;
}

Status ResultSpool::FlushAcks() {
  if (held_acks_.task_ids_size() == 0) return Status::Ok();
  std::string buf;
  AppendRecord(&buf, kAckRecord, held_acks_.SerializeAsString());
  // Cleared either way: acks the log lacks only mean that, after a crash, those results are
  // sent again, and the service acknowledges them again.
  held_acks_.Clear();
  return Write(buf, /*force_sync=*/false);
}

std::vector<v1::TaskResult> ResultSpool::Pending() const {
  std::vector<v1::TaskResult> out;
  out.reserve(pending_.size());
  for (const auto& e : pending_) {
    out.emplace_back();
    LOOM_CHECK(out.back().ParseFromString(e.payload));
  }
  return out;
}

SpoolStats ResultSpool::stats() const {
  return SpoolStats{pending_count(), pending_bytes_, static_cast<int64_t>(segments_.size()), disk_bytes_,
                    replay_errors_};
}

}  // namespace loom::endpoint
