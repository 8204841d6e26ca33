#include "endpoint/spool.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/test_env.h"

namespace loom::endpoint {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMagicBytes = 8;         // at the start of each segment
constexpr size_t kRecordHeaderBytes = 9;  // u32 length, u8 type, u32 crc

v1::TaskResult MakeResult(const std::string& id, size_t error_bytes = 100, char fill = 'e') {
  v1::TaskResult r;
  r.set_task_id(id);
  r.set_ok(false);
  r.set_error(std::string(error_bytes, fill));
  return r;
}

std::string Id(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "t%03d", i);
  return buf;
}

std::vector<std::string> Ids(const std::vector<v1::TaskResult>& results) {
  std::vector<std::string> ids;
  for (const auto& r : results) ids.push_back(r.task_id());
  return ids;
}

int64_t RecordBytes(const v1::TaskResult& r) { return static_cast<int64_t>(kRecordHeaderBytes + r.ByteSizeLong()); }

// Segment file names in the directory, sorted (which is write order).
std::vector<std::string> SegmentFiles(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.starts_with("seg-")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

SpoolOptions Options(const std::string& dir, int64_t segment_bytes = 4 * 1024 * 1024) {
  SpoolOptions o;
  o.dir = dir;
  o.segment_bytes = segment_bytes;
  return o;
}

std::unique_ptr<ResultSpool> OpenSpool(const SpoolOptions& options) {
  auto spool = ResultSpool::Open(options);
  if (!spool.ok()) {
    ADD_FAILURE() << spool.status().ToString();
    return nullptr;
  }
  return std::move(spool).value();
}

void FlipByte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5A));
}

TEST(ResultSpoolTest, AppendAckAndReopenKeepExactlyTheUnacknowledgedResultsInOrder) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult("a"), MakeResult("b"), MakeResult("c")}).ok());
    ASSERT_TRUE(spool->Append({MakeResult("d"), MakeResult("e", 7, 'x')}).ok());
    ASSERT_TRUE(spool->Ack({"b", "d", "never-seen"}).ok());
    EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"a", "c", "e"}));
    EXPECT_EQ(spool->pending_count(), 3);
    EXPECT_EQ(spool->pending_bytes(),
              static_cast<int64_t>(MakeResult("a").ByteSizeLong() + MakeResult("c").ByteSizeLong() +
                                   MakeResult("e", 7, 'x').ByteSizeLong()));
    // Acks for ids not pending cost nothing.
    const int64_t disk = spool->stats().disk_bytes;
    ASSERT_TRUE(spool->Ack({"b", "never-seen"}).ok());
    EXPECT_EQ(spool->stats().disk_bytes, disk);
  }
  {
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    std::vector<v1::TaskResult> pending = spool->Pending();
    EXPECT_EQ(Ids(pending), (std::vector<std::string>{"a", "c", "e"}));
    ASSERT_EQ(pending.size(), 3u);
    EXPECT_EQ(pending[2].SerializeAsString(), MakeResult("e", 7, 'x').SerializeAsString());
    EXPECT_EQ(spool->stats().replay_errors, 0);
    ASSERT_TRUE(spool->Ack({"a"}).ok());
  }
  auto spool = OpenSpool(Options(tmp.path()));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"c", "e"}));
}

// What the endpoint does: results it serialized itself, appended as bytes, read back the same
// after a restart; a batch with a result that has no task id writes nothing.
TEST(ResultSpoolTest, SerializedResultsAreKeptAsTheyAreAndABatchWithoutAnIdWritesNothing) {
  loom::testing::TempDir tmp("spool");
  const std::string a = MakeResult("a").SerializeAsString(), b = MakeResult("b", 30, 'y').SerializeAsString();
  {
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->AppendSerialized({{"a", a}, {"b", b}}).ok());
    const int64_t disk = spool->stats().disk_bytes;
    EXPECT_EQ(spool->AppendSerialized({{"c", a}, {"", b}}).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(spool->stats().disk_bytes, disk);
    EXPECT_EQ(spool->pending_bytes(), static_cast<int64_t>(a.size() + b.size()));
  }
  auto spool = OpenSpool(Options(tmp.path()));
  ASSERT_NE(spool, nullptr);
  std::vector<v1::TaskResult> pending = spool->Pending();
  ASSERT_EQ(Ids(pending), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(pending[0].SerializeAsString(), a);
  EXPECT_EQ(pending[1].SerializeAsString(), b);
}

TEST(ResultSpoolTest, AResultAppendedAgainForAPendingTaskReplacesTheEarlierOne) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult("a", 10, '1'), MakeResult("b")}).ok());
    ASSERT_TRUE(spool->Append({MakeResult("a", 20, '2')}).ok());
    std::vector<v1::TaskResult> pending = spool->Pending();
    ASSERT_EQ(Ids(pending), (std::vector<std::string>{"b", "a"}));
    EXPECT_EQ(pending[1].error(), std::string(20, '2'));
    EXPECT_EQ(spool->pending_bytes(),
              static_cast<int64_t>(MakeResult("b").ByteSizeLong() + MakeResult("a", 20, '2').ByteSizeLong()));
  }
  auto spool = OpenSpool(Options(tmp.path()));
  ASSERT_NE(spool, nullptr);
  std::vector<v1::TaskResult> pending = spool->Pending();
  ASSERT_EQ(Ids(pending), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(pending[1].error(), std::string(20, '2'));
}

TEST(ResultSpoolTest, RotatesSegmentsAndDeletesThemOnceEveryResultInThemIsAcknowledged) {
  loom::testing::TempDir tmp("spool");
  auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
  ASSERT_NE(spool, nullptr);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(spool->Append({MakeResult(Id(i))}).ok());
  const std::vector<std::string> before = SegmentFiles(tmp.path());
  ASSERT_GE(before.size(), 4u);  // ~118-byte records, 8 to a 1 KiB segment
  EXPECT_EQ(spool->stats().segments, static_cast<int64_t>(before.size()));
  for (const auto& name : before) EXPECT_LE(fs::file_size(tmp.path() + "/" + name), 1024u);

  // The first 10 results fill the first segment and part of the second: only the first goes.
  std::vector<std::string> first_ten;
  for (int i = 0; i < 10; ++i) first_ten.push_back(Id(i));
  ASSERT_TRUE(spool->Ack(first_ten).ok());
  std::vector<std::string> after = SegmentFiles(tmp.path());
  EXPECT_EQ(after.size(), before.size() - 1);
  EXPECT_FALSE(fs::exists(tmp.path() + "/" + before[0]));
  EXPECT_TRUE(fs::exists(tmp.path() + "/" + before[1]));
  EXPECT_EQ(spool->pending_count(), 20);

  std::vector<std::string> rest;
  for (int i = 10; i < 30; ++i) rest.push_back(Id(i));
  ASSERT_TRUE(spool->Ack(rest).ok());
  after = SegmentFiles(tmp.path());
  ASSERT_EQ(after.size(), 1u);  // only the one being written
  EXPECT_EQ(spool->stats().segments, 1);
  EXPECT_EQ(spool->stats().disk_bytes, static_cast<int64_t>(fs::file_size(tmp.path() + "/" + after[0])));
  EXPECT_EQ(spool->pending_bytes(), 0);
}

// An ack may stand in a later segment than its result. Deleting that later segment (all its own
// results acknowledged) while the result's segment stays would bring the result back on replay.
TEST(ResultSpoolTest, NeverForgetsAnAckWhileTheResultItAcknowledgesIsStillOnDisk) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult("x", 400), MakeResult("y", 400)}).ok());  // segment A
    ASSERT_TRUE(spool->Append({MakeResult("z", 400)}).ok());                        // segment B
    ASSERT_EQ(SegmentFiles(tmp.path()).size(), 2u);
    ASSERT_TRUE(spool->Ack({"x"}).ok());                      // ack of A's result, written in B
    ASSERT_TRUE(spool->Ack({"z"}).ok());                      // B holds no pending result now
    ASSERT_TRUE(spool->Append({MakeResult("w", 700)}).ok());  // segment C; B is no longer current
    ASSERT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"y", "w"}));
  }
  auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"y", "w"}));
}

TEST(ResultSpoolTest, OneResultNeverAcknowledgedDoesNotPinTheLog) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult(Id(0))}).ok());
    for (int i = 1; i < 300; ++i) {
      ASSERT_TRUE(spool->Append({MakeResult(Id(i))}).ok());
      ASSERT_TRUE(spool->Ack({Id(i)}).ok());
      ASSERT_LE(spool->stats().segments, 4) << "after result " << i;
    }
    EXPECT_EQ(SegmentFiles(tmp.path()).size(), static_cast<size_t>(spool->stats().segments));
    EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{Id(0)}));
  }
  auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{Id(0)}));
}

TEST(ResultSpoolTest, OpenCompactsPendingResultsIntoFreshSegmentsSoTheLogDoesNotGrowAcrossRestarts) {
  loom::testing::TempDir tmp("spool");
  const std::vector<std::string> kept = {Id(3), Id(10), Id(17), Id(24), Id(29)};
  std::vector<std::string> written;
  std::vector<std::string> order;  // stragglers copied forward while writing count as written then
  {
    auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
    ASSERT_NE(spool, nullptr);
    for (int i = 0; i < 30; ++i) {
      ASSERT_TRUE(spool->Append({MakeResult(Id(i))}).ok());
      if (std::find(kept.begin(), kept.end(), Id(i)) == kept.end()) {
        ASSERT_TRUE(spool->Ack({Id(i)}).ok());
      }
    }
    written = SegmentFiles(tmp.path());
    ASSERT_GE(written.size(), 3u);
    order = Ids(spool->Pending());
    std::vector<std::string> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    ASSERT_EQ(sorted, kept);
  }
  int64_t disk_after_first_reopen = 0;
  for (int round = 0; round < 3; ++round) {
    auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(Ids(spool->Pending()), order);
    std::vector<std::string> now = SegmentFiles(tmp.path());
    ASSERT_EQ(now.size(), 1u);  // five 118-byte records fit one segment
    EXPECT_GT(now[0], written.back());
    if (round == 0) disk_after_first_reopen = spool->stats().disk_bytes;
    EXPECT_EQ(spool->stats().disk_bytes, disk_after_first_reopen);
    written = now;
  }
}

TEST(ResultSpoolTest, ATornLastRecordEndsReplayAndTheResultsBeforeItSurvive) {
  const int64_t last = RecordBytes(MakeResult("c"));
  // Cut into the payload, into the header, and leave only part of the header.
  for (int64_t cut : {int64_t{1}, last / 2, last - 4, last - 1}) {
    SCOPED_TRACE("cut " + std::to_string(cut) + " of " + std::to_string(last) + " bytes");
    loom::testing::TempDir tmp("spool");
    {
      auto spool = OpenSpool(Options(tmp.path()));
      ASSERT_NE(spool, nullptr);
      for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(spool->Append({MakeResult(id)}).ok());
    }
    const std::string seg = tmp.path() + "/" + SegmentFiles(tmp.path()).back();
    fs::resize_file(seg, fs::file_size(seg) - static_cast<uintmax_t>(cut));
    {
      auto spool = OpenSpool(Options(tmp.path()));
      ASSERT_NE(spool, nullptr);
      EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"a", "b"}));
      EXPECT_EQ(spool->stats().replay_errors, 1);
      ASSERT_TRUE(spool->Append({MakeResult("d")}).ok());
    }
    // The torn segment was compacted away: nothing is reported twice.
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"a", "b", "d"}));
    EXPECT_EQ(spool->stats().replay_errors, 0);
  }
}

TEST(ResultSpoolTest, AFlippedByteEndsReplayOfItsSegmentAndTheResultsBeforeItSurvive) {
  const int64_t b_offset = static_cast<int64_t>(kMagicBytes) + RecordBytes(MakeResult("a"));
  // A byte of b's length, type, checksum and payload.
  for (int64_t at : {int64_t{0}, int64_t{4}, int64_t{6}, int64_t{kRecordHeaderBytes + 20}}) {
    SCOPED_TRACE("byte " + std::to_string(at) + " of the second record");
    loom::testing::TempDir tmp("spool");
    {
      auto spool = OpenSpool(Options(tmp.path()));
      ASSERT_NE(spool, nullptr);
      for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(spool->Append({MakeResult(id)}).ok());
    }
    FlipByte(tmp.path() + "/" + SegmentFiles(tmp.path()).back(), b_offset + at);
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"a"}));
    EXPECT_EQ(spool->stats().replay_errors, 1);
  }
}

TEST(ResultSpoolTest, ACorruptSegmentDoesNotHideTheSegmentsAfterIt) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult("a", 400)}).ok());
    ASSERT_TRUE(spool->Append({MakeResult("b", 400)}).ok());
    ASSERT_TRUE(spool->Append({MakeResult("c", 400)}).ok());  // starts a second segment
    ASSERT_EQ(SegmentFiles(tmp.path()).size(), 2u);
  }
  const int64_t b_payload = static_cast<int64_t>(kMagicBytes) + RecordBytes(MakeResult("a", 400)) +
                            static_cast<int64_t>(kRecordHeaderBytes) + 30;
  FlipByte(tmp.path() + "/" + SegmentFiles(tmp.path()).front(), b_payload);
  auto spool = OpenSpool(Options(tmp.path(), /*segment_bytes=*/1024));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(spool->stats().replay_errors, 1);
}

TEST(ResultSpoolTest, RefusesAppendsThatWouldPassMaxBytesUntilResultsAreAcknowledged) {
  loom::testing::TempDir tmp("spool");
  SpoolOptions o = Options(tmp.path());
  o.max_bytes = 3 * static_cast<int64_t>(MakeResult(Id(0)).ByteSizeLong());
  auto spool = OpenSpool(o);
  ASSERT_NE(spool, nullptr);
  ASSERT_TRUE(spool->Append({MakeResult(Id(0)), MakeResult(Id(1))}).ok());
  ASSERT_TRUE(spool->Append({MakeResult(Id(2))}).ok());
  const int64_t disk = spool->stats().disk_bytes;

  Status full = spool->Append({MakeResult(Id(3))});
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("max_bytes"), std::string::npos) << full.message();
  EXPECT_EQ(spool->Append({MakeResult(Id(3)), MakeResult(Id(4))}).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(spool->pending_count(), 3);
  EXPECT_EQ(spool->stats().disk_bytes, disk);  // nothing of a refused batch is written

  ASSERT_TRUE(spool->Ack({Id(1)}).ok());
  ASSERT_TRUE(spool->Append({MakeResult(Id(3))}).ok());
  EXPECT_EQ(Ids(spool->Pending()), (std::vector<std::string>{Id(0), Id(2), Id(3)}));
}

TEST(ResultSpoolTest, RejectsAResultWithoutATaskId) {
  loom::testing::TempDir tmp("spool");
  auto spool = OpenSpool(Options(tmp.path()));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->Append({MakeResult("a"), MakeResult("")}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(spool->pending_count(), 0);
}

TEST(ResultSpoolTest, ASecondOpenOfTheSameDirectoryFailsWhileTheFirstIsOpen) {
  loom::testing::TempDir tmp("spool");
  auto first = OpenSpool(Options(tmp.path()));
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Append({MakeResult("a")}).ok());

  auto second = ResultSpool::Open(Options(tmp.path()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("another loom-endpoint with this spool directory is running"),
            std::string::npos)
      << second.status().message();
  ASSERT_TRUE(first->Append({MakeResult("b")}).ok());  // the refused Open touched nothing

  first.reset();
  auto third = OpenSpool(Options(tmp.path()));
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(Ids(third->Pending()), (std::vector<std::string>{"a", "b"}));
}

// Results and the lock survive kill -9 of the process holding the spool. Ack() holds its record
// for the next write, so what the next open finds depends on whether one came: an ack that never
// reached the file only brings its result back (sent again, acknowledged again).
TEST(ResultSpoolTest, ResultsAndTheLockSurviveKillDashNineAndAnAckLostWithItBringsItsResultBack) {
  struct Case {
    const char* what;
    std::function<bool(ResultSpool&)> after_ack;
    std::vector<std::string> pending;
  };
  const std::vector<Case> cases = {
      {"nothing written after the ack", [](ResultSpool&) { return true; }, {"a", "b"}},
      {"an append after the ack", [](ResultSpool& s) { return s.Append({MakeResult("c")}).ok(); }, {"b", "c"}},
      {"FlushAcks after the ack", [](ResultSpool& s) { return s.FlushAcks().ok(); }, {"b"}},
  };
  for (const auto& c : cases) {
    loom::testing::TempDir tmp("spool");
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto spool = ResultSpool::Open(Options(tmp.path()));
      if (!spool.ok()) ::_exit(1);
      if (!(*spool)->Append({MakeResult("a"), MakeResult("b")}).ok()) ::_exit(2);
      if (!(*spool)->Ack({"a"}).ok()) ::_exit(3);
      if ((*spool)->pending_count() != 1) ::_exit(4);  // forgotten at once, written or not
      if (!c.after_ack(**spool)) ::_exit(5);
      ::kill(::getpid(), SIGKILL);
      ::_exit(6);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << c.what << ": child exited with " << WEXITSTATUS(status);
    ASSERT_EQ(WTERMSIG(status), SIGKILL);
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(Ids(spool->Pending()), c.pending) << c.what;
  }
}

TEST(ResultSpoolTest, ClosingWritesTheHeldAcks) {
  loom::testing::TempDir tmp("spool");
  {
    auto spool = OpenSpool(Options(tmp.path()));
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append({MakeResult("a"), MakeResult("b")}).ok());
    ASSERT_TRUE(spool->Ack({"a", "b"}).ok());
  }
  auto spool = OpenSpool(Options(tmp.path()));
  ASSERT_NE(spool, nullptr);
  EXPECT_TRUE(spool->Pending().empty());
}

}  // namespace
}  // namespace loom::endpoint
