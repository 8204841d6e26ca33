// loom-chaos: a randomized fault run against a whole Loom on this host. It starts redis-server,
// loom-service and endpoints with their workers (LocalFabric, on free loopback ports), submits
// tasks at a steady rate, and meanwhile kills (SIGKILL) or stops (SIGSTOP) one of those
// processes every few seconds and restarts it. At the end it waits for every acknowledged task
// and checks Loom's delivery promise on everything the client saw (DeliveryChecker): each
// acknowledged task ends in exactly one terminal outcome (none lost, none committed twice),
// within its attempt budget, with the right result. It also replays submits with their
// idempotency keys (a repeat must return the original ids) and, at the end, reads every task
// record straight from Redis: no key of this run may own two tasks. Between faults it watches the
// processes: one that exits although no fault killed it is reported and restarted, and an endpoint
// that stays offline while its process runs is reported as stuck.
//
//   loom-chaos --duration-s 60                         # all faults, one every 4 s
//   loom-chaos --faults worker,redis --seed 7 --keep   # only these faults; keep logs and data
//
// Exit code 0 only when the check holds and no process exited or got stuck by itself; 1
// otherwise; 2 when the run could not start. The report names the seed; the state directory
// (logs, Redis data) is kept when the run fails, or with --keep.
// Not a ctest test (runs take minutes); `loom-chaos --help` is.
//
// Threads: main (start-up, the fault schedule, the end), the load generator, the collector (a
// dispatcher plus one watcher per generation of acknowledged tasks), the progress reporter and a
// signal waiter. Only main touches the LocalFabric.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/local_fabric.h"
#include "common/redis.h"
#include "common/task_state.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "service/redis_keys.h"
#include "tests/support/delivery_checker.h"
#include "tests/support/fabric_client.h"

namespace loom::chaos {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using loom::testing::DeliveryChecker;

constexpr auto kProgressEvery = 5s;
// How often the collector starts following the tasks acknowledged since its last look.
constexpr auto kGenerationEvery = 200ms;
// One StreamResults call lasts at most this long; then the watcher subscribes again (and notices
// the end of the drain).
constexpr auto kStreamSegment = 10s;
// After the load stops, a batch still being refused is tried this much longer.
constexpr auto kSubmitGraceAfterStop = 30s;
// Calls failing this long in a row (UNAVAILABLE, DEADLINE_EXCEEDED) get a new Client.
constexpr auto kReconnectAfter = 5s;
constexpr auto kRpcTimeout = 5s;
// How often the processes are checked for exits no fault caused, and the service asked
// whether the endpoints are online.
constexpr auto kSuperviseEvery = 250ms;
constexpr auto kProbeEvery = 1s;
// An endpoint offline this long (or 10 liveness thresholds, if longer) while its process runs
// and no fault stops it is reported as stuck.
constexpr auto kStuckAfterAtLeast = 15s;
// Restarting a killed process: tries and the pause between them.
constexpr int kRestartTries = 30;
constexpr auto kRestartPause = 1s;
// Every kReplayEvery-th accepted batch is kept (up to kReplayKept) and, every kReplayEvery-th
// batch, one kept batch is submitted again: the keys must still answer with the same ids,
// however many faults happened in between.
constexpr int kReplayEvery = 20;
constexpr size_t kReplayKept = 200;
// Sleep tasks take about this share of the workers' time; the rest is echo.
constexpr double kSleepShare = 0.2;
constexpr double kSleepMinS = 0.01;
constexpr double kSleepMaxS = 0.2;
constexpr size_t kShownProblems = 5;

// ---------------------------------------------------------------- options and faults

enum class Fault { kWorker, kEndpoint, kService, kRedis, kStopEndpoint };
constexpr size_t kFaultKinds = 5;
constexpr std::array<const char*, kFaultKinds> kFaultNames = {"worker", "endpoint", "service", "redis",
                                                              "stop-endpoint"};

struct Options {
  double duration_s = 60;
  double fault_every_s = 4;
  int endpoints = 2;
  int workers = 2;
  double rate = 2000;
  int batch = 50;
  int64_t max_in_flight = 20000;
  int max_attempts = 3;
  std::string state_dir;  // empty: a new temp dir
  bool keep = false;
  uint64_t seed = 0;
  std::vector<std::string> faults = std::vector<std::string>(kFaultNames.begin(), kFaultNames.end());
  int heartbeat_period_ms = 300;
  int heartbeat_misses = 3;
  double drain_timeout_s = 120;
  std::string log_level = "info";
  std::string fabric_log_level = "info";

  std::chrono::milliseconds liveness_threshold() const {
    return std::chrono::milliseconds(int64_t{heartbeat_period_ms} * heartbeat_misses);
  }
};

bool IsTransient(StatusCode code) { return code == StatusCode::kUnavailable || code == StatusCode::kDeadlineExceeded; }

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ---------------------------------------------------------------- shared state

// Counters of a run. Thread-safe (atomics).
struct Counters {
  std::atomic<int64_t> accepted{0};  // tasks acknowledged
  std::atomic<int64_t> batches{0};
  std::atomic<int64_t> completed{0};  // tasks whose terminal record the collector delivered
  std::atomic<int64_t> refused_unavailable{0};
  std::atomic<int64_t> refused_deadline{0};
  std::atomic<int64_t> refused_exhausted{0};
  std::atomic<int64_t> refused_other{0};
  std::atomic<int64_t> replays{0};          // submits repeated with their keys to check the answer
  std::atomic<int64_t> replay_mismatch{0};  // tasks whose repeated submit answered another id
  std::atomic<int64_t> replays_unchecked{0};
  std::atomic<int64_t> abandoned{0};  // tasks of batches still refused when the run ended
  std::atomic<int64_t> reconnects{0};
  std::array<std::atomic<int64_t>, kFaultKinds> faults{};
  std::atomic<int64_t> restart_failures{0};

  int64_t in_flight() const { return accepted.load() - completed.load(); }
  int64_t faults_total() const {
    int64_t n = 0;
    for (const auto& f : faults) n += f.load();
    return n;
  }
};

// The stop flags of a run and one condition variable to wake every sleeper when one changes.
// Thread-safe.
class RunState {
 public:
  std::atomic<bool> interrupted{false};  // SIGINT/SIGTERM/SIGHUP: finish early and report
  std::atomic<bool> abort_drain{false};  // a second signal: stop waiting for results
  std::atomic<bool> load_stopped{false};

  void Wake() {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  // Waits until `t` or until `done()` holds; returns done().
  template <typename Pred>
  bool WaitUntil(Clock::time_point t, Pred done) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, t, done);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

// The Client every thread uses. A service restart normally needs nothing (the gRPC channel
// reconnects by itself); when calls keep failing with UNAVAILABLE or DEADLINE_EXCEEDED for
// kReconnectAfter, the client is replaced by a freshly connected one. Thread-safe.
class ClientHolder {
 public:
  ClientHolder(ClientOptions options, Counters& counters) : options_(std::move(options)), counters_(counters) {}

  Status Connect() {
    auto c = Client::Connect(options_);
    if (!c.ok()) return c.status();
    std::lock_guard<std::mutex> lock(mu_);
    client_ = std::shared_ptr<Client>(std::move(c).value());
    return Status::Ok();
  }

  // shared_ptr: a thread may still be inside a call on the old client while another replaces it.
  std::shared_ptr<Client> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return client_;
  }

  // The outcome of a call made on `used`.
  void Report(const std::shared_ptr<Client>& used, const Status& s) {
    const auto now = Clock::now();
    Clock::duration failing_for{};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (used != client_) return;  // replaced already
      if (!IsTransient(s.code())) {
        failing_since_.reset();
        return;
      }
      if (!failing_since_) {
        failing_since_ = now;
        return;
      }
      failing_for = now - *failing_since_;
      if (failing_for < kReconnectAfter || reconnecting_) return;
      reconnecting_ = true;
    }
    spdlog::warn("calls to the service have failed for {:.1f} s (last: {}); connecting a new client",
                 Seconds(failing_for), s.ToString());
    auto c = Client::Connect(options_);
    std::lock_guard<std::mutex> lock(mu_);
    reconnecting_ = false;
    failing_since_ = Clock::now();  // give the new client (or the next try) a full stretch
    if (c.ok()) {
      client_ = std::shared_ptr<Client>(std::move(c).value());
      ++counters_.reconnects;
    } else {
      spdlog::warn("reconnecting failed: {}", c.status().ToString());
    }
  }

 private:
  const ClientOptions options_;
  Counters& counters_;
  mutable std::mutex mu_;
  std::shared_ptr<Client> client_;                  // GUARDED_BY(mu_)
  std::optional<Clock::time_point> failing_since_;  // GUARDED_BY(mu_)
  bool reconnecting_ = false;                       // GUARDED_BY(mu_)
};

// ---------------------------------------------------------------- collector

// Follows every acknowledged task to its terminal record and hands each record to the checker.
// Tasks are followed in generations (those acknowledged within kGenerationEvery), one
// StreamResults per generation on its own thread, so each id is subscribed once rather than
// polled. Thread-safe: Add from any thread; Start, Close, Done and Finish from one.
class Collector {
 public:
  Collector(ClientHolder& clients, DeliveryChecker& checker, Counters& counters, RunState& run)
      : clients_(clients), checker_(checker), counters_(counters), run_(run) {}
  ~Collector() { Finish(Clock::now()); }
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  void Start() {
    dispatcher_ = std::thread([this] { DispatchLoop(); });
  }

  void Add(const std::vector<std::string>& ids) {
    std::lock_guard<std::mutex> lock(mu_);
    fresh_.insert(fresh_.end(), ids.begin(), ids.end());
  }

  // Takes no more tasks (those added so far are followed) and gives up on the ones without a
  // terminal record at `deadline` or on run.abort_drain.
  void Close(Clock::time_point deadline) {
    give_up_at_ns_ = deadline.time_since_epoch().count();
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
      cv_.notify_all();
    }
    if (dispatcher_.joinable()) dispatcher_.join();
  }

  // After Close: whether every task has its terminal record or was given up on.
  bool Done() const {
    return std::all_of(watchers_.begin(), watchers_.end(), [](const Watcher& w) { return w.done.load(); });
  }

  // Close, then wait until Done.
  void Finish(Clock::time_point deadline) {
    Close(deadline);
    for (auto& w : watchers_) {
      if (w.thread.joinable()) w.thread.join();
    }
    watchers_.clear();
  }

  // Ids whose terminal record was never delivered (after Finish).
  std::vector<std::string> Unresolved() const {
    std::lock_guard<std::mutex> lock(mu_);
    return unresolved_;
  }

 private:
  struct Watcher {
    std::thread thread;
    std::atomic<bool> done{false};
  };

  bool GivingUp() const { return run_.abort_drain || Clock::now().time_since_epoch().count() >= give_up_at_ns_.load(); }

  void DispatchLoop() {
    while (true) {
      std::vector<std::string> ids;
      bool closing = false;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, kGenerationEvery, [this] { return closing_; });
        ids.swap(fresh_);
        closing = closing_;
      }
      if (!ids.empty()) {
        Watcher& w = watchers_.emplace_back();
        w.thread = std::thread([this, &w, generation = std::move(ids)]() mutable {
          Watch(std::move(generation));
          w.done = true;
        });
      }
      for (auto it = watchers_.begin(); it != watchers_.end();) {
        if (it->done) {
          it->thread.join();
          it = watchers_.erase(it);
        } else {
          ++it;
        }
      }
      if (closing) return;
    }
  }

  void Watch(std::vector<std::string> ids) {
    std::unordered_set<std::string> remaining(ids.begin(), ids.end());
    auto on_record = [&](const v1::TaskRecord& r) {
      checker_.Observed(r);
      if (IsTerminal(r.state()) && remaining.erase(r.id()) > 0) ++counters_.completed;
    };
    bool warned = false;
    while (!remaining.empty() && !GivingUp()) {
      auto client = clients_.Get();
      std::vector<std::string> list(remaining.begin(), remaining.end());
      Status s = client->StreamResults(
          list,
          [&](const v1::TaskRecord& r) {
            on_record(r);
            return !run_.abort_drain;
          },
          kStreamSegment);
      // DEADLINE_EXCEEDED is this segment's own timeout (tasks still running, or the service away
      // all along): it says nothing about the connection.
      if (s.code() == StatusCode::kDeadlineExceeded) continue;
      clients_.Report(client, s);
      if (s.ok()) continue;
      if (IsTransient(s.code())) {
        std::this_thread::sleep_for(200ms);  // pacing of retries while the service is away
        continue;
      }
      // Not an outage: e.g. NOT_FOUND for an acknowledged id. Find out task by task.
      if (!warned) {
        spdlog::warn("following {} task(s) failed: {}; reading them one by one", list.size(), s.ToString());
        warned = true;
      }
      for (const std::string& id : list) {
        auto r = client->GetStatus(id);
        if (r.ok()) {
          on_record(*r);
        } else if (r.status().code() == StatusCode::kNotFound) {
          spdlog::error("acknowledged task {} is not known to the service: {}", id, r.status().ToString());
        }
      }
      std::this_thread::sleep_for(1s);  // pacing of retries
    }
    if (!remaining.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      unresolved_.insert(unresolved_.end(), remaining.begin(), remaining.end());
    }
  }

  ClientHolder& clients_;
  DeliveryChecker& checker_;
  Counters& counters_;
  RunState& run_;
  std::atomic<int64_t> give_up_at_ns_{Clock::time_point::max().time_since_epoch().count()};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> fresh_;       // GUARDED_BY(mu_)
  bool closing_ = false;                 // GUARDED_BY(mu_)
  std::vector<std::string> unresolved_;  // GUARDED_BY(mu_)
  std::list<Watcher> watchers_;          // the dispatcher's until Close, then its caller's
  std::thread dispatcher_;
};

// ---------------------------------------------------------------- load

// Submits batches of keyed tasks to random endpoints at the target rate, retrying a refused
// batch with the same keys until it is accepted, and acknowledges what the service answered.
// Run on one thread; the accessors only after it returned.
class LoadGenerator {
 public:
  LoadGenerator(const Options& o, std::vector<std::string> endpoints, ClientHolder& clients, DeliveryChecker& checker,
                Collector& collector, Counters& counters, RunState& run)
      : o_(o),
        endpoints_(std::move(endpoints)),
        clients_(clients),
        checker_(checker),
        collector_(collector),
        counters_(counters),
        run_(run),
        rng_(o.seed + 1),
        key_prefix_("chaos-" + std::to_string(o.seed) + "-" + std::to_string(NowNanos()) + "-") {
    // Sleep tasks per second that keep the workers kSleepShare busy, as a share of all tasks.
    const double mean_sleep = (kSleepMinS + kSleepMaxS) / 2;
    sleep_probability_ = std::min(1.0, kSleepShare * o.endpoints * o.workers / mean_sleep / o.rate);
  }

  void Run() {
    const auto per_batch =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.batch / o_.rate));
    auto next_at = Clock::now();
    auto stopped = [this] { return run_.load_stopped.load(); };
    for (int64_t n = 0;; ++n) {
      if (run_.WaitUntil(next_at, stopped)) return;
      // Back-pressure: while the fabric is far behind (e.g. an endpoint is away), do not pile on.
      while (counters_.in_flight() >= o_.max_in_flight) {
        if (run_.WaitUntil(Clock::now() + 50ms, stopped)) return;
      }
      SubmitOneBatch();
      if (n % kReplayEvery == kReplayEvery - 1) ReplayOne();
      next_at += per_batch;
      // After an outage, carry on at the rate rather than bursting to catch up.
      if (Clock::now() - next_at > 1s) next_at = Clock::now();
    }
  }

  const std::string& key_prefix() const { return key_prefix_; }
  const std::unordered_map<std::string, std::string>& id_by_key() const { return id_by_key_; }
  const std::vector<std::string>& acknowledged() const { return acknowledged_; }
  int64_t sleeps() const { return sleeps_; }

 private:
  struct Batch {
    std::vector<v1::SubmitRequest> requests;
    std::vector<std::string> ids;
  };

  v1::SubmitRequest NextRequest(std::optional<Value>* expected) {
    const std::string& ep = endpoints_[std::uniform_int_distribution<size_t>(0, endpoints_.size() - 1)(rng_)];
    SubmitOptions so;
    so.idempotency_key = key_prefix_ + std::to_string(next_task_);
    so.max_attempts = o_.max_attempts;
    if (std::bernoulli_distribution(sleep_probability_)(rng_)) {
      ++sleeps_;
      ++next_task_;
      expected->reset();  // sleep returns how long it slept
      return MakeSubmitRequest(
          ep, "sleep", {DoubleValue(std::uniform_real_distribution<double>(kSleepMinS, kSleepMaxS)(rng_))}, {}, so);
    }
    const int64_t value = next_task_++;
    *expected = IntValue(value);
    return MakeSubmitRequest(ep, "echo", {IntValue(value)}, {}, so);
  }

  void CountRefusal(const Status& s, bool* warned) {
    switch (s.code()) {
      case StatusCode::kUnavailable:
        ++counters_.refused_unavailable;
        return;
      case StatusCode::kDeadlineExceeded:
        ++counters_.refused_deadline;
        return;
      case StatusCode::kResourceExhausted:
        ++counters_.refused_exhausted;
        return;
      default:
        ++counters_.refused_other;
        if (!*warned) spdlog::warn("a batch was refused: {}; retrying it with the same keys", s.ToString());
        *warned = true;
    }
  }

  // Sends `requests` until the service accepts them: the same keys every time, so a submit that
  // was committed but whose answer was lost is answered with the original ids. nullopt when the
  // load stopped and kSubmitGraceAfterStop passed. *tries: the submits sent.
  std::optional<std::vector<std::string>> SubmitUntilAccepted(const std::vector<v1::SubmitRequest>& requests,
                                                              int* tries) {
    auto backoff = 20ms;
    bool warned = false;
    std::optional<Clock::time_point> give_up_at;
    while (true) {
      auto client = clients_.Get();
      auto ids = client->SubmitBatch(requests);
      ++*tries;
      clients_.Report(client, ids.status());
      if (ids.ok()) {
        if (ids->size() == requests.size()) return std::move(ids).value();
        spdlog::error("a batch of {} tasks was answered with {} ids; submitting it again", requests.size(),
                      ids->size());
      } else {
        CountRefusal(ids.status(), &warned);
      }
      if (run_.load_stopped) {
        if (!give_up_at) give_up_at = Clock::now() + kSubmitGraceAfterStop;
        if (Clock::now() > *give_up_at) return std::nullopt;
      }
      std::this_thread::sleep_for(backoff);  // pacing of retries while the service is away
      backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(1s));
    }
  }

  // Submits `batch` again and compares the answer with the ids it got before. Returns whether the
  // check could be made.
  bool Replay(const Batch& batch, const char* why) {
    for (int i = 0; i < 10 && !run_.abort_drain; ++i) {
      auto client = clients_.Get();
      auto again = client->SubmitBatch(batch.requests);
      clients_.Report(client, again.status());
      if (!again.ok()) {
        std::this_thread::sleep_for(200ms);  // pacing of retries
        continue;
      }
      ++counters_.replays;
      for (size_t k = 0; k < batch.ids.size(); ++k) {
        const std::string got = k < again->size() ? (*again)[k] : std::string("(none)");
        if (got == batch.ids[k]) continue;
        if (++counters_.replay_mismatch <= static_cast<int64_t>(kShownProblems)) {
          spdlog::error("duplicate: key {} was acknowledged as task {}, and its {} submit answered {}",
                        batch.requests[k].idempotency_key(), batch.ids[k], why, got);
        }
      }
      return true;
    }
    ++counters_.replays_unchecked;
    return false;
  }

  void SubmitOneBatch() {
    Batch batch;
    std::vector<std::optional<Value>> expected(static_cast<size_t>(o_.batch));
    batch.requests.reserve(expected.size());
    for (auto& e : expected) batch.requests.push_back(NextRequest(&e));
    int tries = 0;
    auto ids = SubmitUntilAccepted(batch.requests, &tries);
    if (!ids) {
      counters_.abandoned += static_cast<int64_t>(batch.requests.size());
      spdlog::warn("gave up on a batch of {} tasks still refused {} s after the load stopped", batch.requests.size(),
                   Seconds(kSubmitGraceAfterStop));
      return;
    }
    batch.ids = std::move(*ids);
    for (size_t k = 0; k < batch.ids.size(); ++k) {
      const std::string& id = batch.ids[k];
      const std::string& key = batch.requests[k].idempotency_key();
      if (id.empty() || !ids_seen_.insert(id).second) {
        // Two keys answered with one task: one of them has no task of its own.
        if (++counters_.replay_mismatch <= static_cast<int64_t>(kShownProblems)) {
          spdlog::error("duplicate: key {} was answered with task '{}', which another key got before", key, id);
        }
        continue;
      }
      if (expected[k]) {
        checker_.Acknowledged(id, *expected[k]);
      } else {
        checker_.Acknowledged(id);
      }
      id_by_key_.emplace(key, id);
      acknowledged_.push_back(id);
    }
    collector_.Add(batch.ids);
    counters_.accepted += static_cast<int64_t>(batch.ids.size());
    ++counters_.batches;
    // A batch accepted only after a refusal may have been committed by the refused try too: the
    // keys must answer with the ids acknowledged now.
    if (tries > 1) Replay(batch, "repeated");
    if (counters_.batches % kReplayEvery == 0) {
      if (kept_.size() < kReplayKept) {
        kept_.push_back(std::move(batch));
      } else {
        kept_[std::uniform_int_distribution<size_t>(0, kept_.size() - 1)(rng_)] = std::move(batch);
      }
    }
  }

  // Submits one earlier batch again, perhaps from before several faults (a Redis restart among
  // them): its keys must still answer with the acknowledged ids.
  void ReplayOne() {
    if (kept_.empty()) return;
    Replay(kept_[std::uniform_int_distribution<size_t>(0, kept_.size() - 1)(rng_)], "later");
  }

  const Options& o_;
  const std::vector<std::string> endpoints_;
  ClientHolder& clients_;
  DeliveryChecker& checker_;
  Collector& collector_;
  Counters& counters_;
  RunState& run_;
  std::mt19937_64 rng_;
  const std::string key_prefix_;
  double sleep_probability_ = 0;
  int64_t next_task_ = 0;
  int64_t sleeps_ = 0;
  std::vector<Batch> kept_;
  std::unordered_set<std::string> ids_seen_;
  std::unordered_map<std::string, std::string> id_by_key_;
  std::vector<std::string> acknowledged_;
};

// ---------------------------------------------------------------- progress

// Logs a progress line every kProgressEvery and keeps the completion rate of each interval
// that lies wholly inside the load phase. Thread-safe.
class Progress {
 public:
  Progress(const Counters& counters, RunState& run, Clock::time_point start, Clock::time_point load_end)
      : counters_(counters), run_(run), start_(start), load_end_(load_end) {}
  ~Progress() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_ = true;
    run_.Wake();
    if (thread_.joinable()) thread_.join();
  }
  // The load phase ended early (a signal): later intervals do not count.
  void LoadEnded() { load_end_ns_ = Clock::now().time_since_epoch().count(); }

  std::vector<double> rates() const {
    std::lock_guard<std::mutex> lock(mu_);
    return rates_;
  }

 private:
  void Loop() {
    auto last_t = start_;
    int64_t last_completed = 0, last_accepted = 0;
    for (auto next = start_ + kProgressEvery;; next += kProgressEvery) {
      if (run_.WaitUntil(next, [this] { return stop_.load(); })) return;
      const auto now = Clock::now();
      const int64_t completed = counters_.completed, accepted = counters_.accepted;
      const double dt = Seconds(now - last_t);
      const double rate = static_cast<double>(completed - last_completed) / dt;
      // Scheduled tick times, so that the interval ending as the load ends counts.
      const bool in_load =
          next.time_since_epoch().count() <= std::min(load_end_ns_.load(), load_end_.time_since_epoch().count());
      if (in_load) {
        std::lock_guard<std::mutex> lock(mu_);
        rates_.push_back(rate);
      }
      spdlog::info(
          "{}{:6.1f} s: accepted {} completed {} in flight {} faults {}; {:.0f} tasks/s completed, {:.0f} tasks/s "
          "submitted over the last {:.1f} s",
          in_load ? "" : "draining ", Seconds(now - start_), accepted, completed, accepted - completed,
          counters_.faults_total(), rate, static_cast<double>(accepted - last_accepted) / dt, dt);
      last_t = now;
      last_completed = completed;
      last_accepted = accepted;
    }
  }

  const Counters& counters_;
  RunState& run_;
  const Clock::time_point start_;
  const Clock::time_point load_end_;
  std::atomic<int64_t> load_end_ns_{Clock::time_point::max().time_since_epoch().count()};
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<double> rates_;  // GUARDED_BY(mu_)
  std::thread thread_;
};

// ---------------------------------------------------------------- faults (main thread only)

class FaultInjector {
 public:
  FaultInjector(const Options& o, LocalFabric& fabric, std::vector<std::string> endpoints, ClientHolder& clients,
                Counters& counters, RunState& run)
      : o_(o),
        fabric_(fabric),
        endpoints_(std::move(endpoints)),
        clients_(clients),
        counters_(counters),
        run_(run),
        rng_(o.seed),
        stuck_after_(std::max<Clock::duration>(kStuckAfterAtLeast, o.liveness_threshold() * 10)) {
    for (const std::string& name : o.faults) {
      for (size_t k = 0; k < kFaultKinds; ++k) {
        if (name == kFaultNames[k]) enabled_.push_back(static_cast<Fault>(k));
      }
    }
  }

  // Injects faults every fault_every_s until `end` or a signal, and checks the processes in
  // between. Returns false when a process could not be restarted (the run cannot go on).
  bool Run(Clock::time_point end) {
    const auto every = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.fault_every_s));
    auto next = Clock::now() + every;
    while (true) {
      const auto wake = std::min({next, end, Clock::now() + kSuperviseEvery});
      if (run_.WaitUntil(wake, [this] { return run_.interrupted.load(); })) return true;
      if (!Supervise()) return false;
      if (Clock::now() >= end) return true;
      if (Clock::now() < next) continue;
      if (!enabled_.empty()) {
        const Fault f = enabled_[std::uniform_int_distribution<size_t>(0, enabled_.size() - 1)(rng_)];
        if (!Inject(f)) return false;
        ++counters_.faults[static_cast<size_t>(f)];
      }
      next += every;
      if (next < Clock::now()) next = Clock::now();
    }
  }

  // Restarts, and reports, every process that exited although no fault killed it (a crash, or
  // one that stopped itself): the fabric must stay whole for the run to mean anything. Returns
  // false when one could not be restarted.
  bool Supervise() {
    for (const std::string& ep : endpoints_) {
      Subprocess* p = fabric_.endpoint(ep);
      if (p->Running()) continue;
      Unexpected("endpoint " + ep, *p, "endpoint-" + ep);
      if (!Restart("endpoint " + ep, [&] { return fabric_.StartEndpoint(ep, o_.workers); })) return false;
    }
    if (!fabric_.service().Running()) {
      Unexpected("loom-service", fabric_.service(), "service");
      if (!Restart("loom-service", [&] { return fabric_.StartService(); })) return false;
    }
    if (!fabric_.redis().Running()) {
      Unexpected("redis-server", fabric_.redis(), "redis");
      if (!Restart("redis-server", [&] { return fabric_.StartRedis(); })) return false;
    }
    if (Clock::now() >= next_probe_) {
      next_probe_ = Clock::now() + kProbeEvery;
      ProbeEndpoints();
    }
    return true;
  }

  // "<time> <what> (pid N) exited on its own (<status>); its log ends: <last lines>", one per
  // exit Supervise saw.
  const std::vector<std::string>& unexpected_exits() const { return unexpected_; }
  // One line per endpoint that the service saw offline for stuck_after_ although its process
  // ran and no fault had it stopped: a live endpoint that never came back.
  const std::vector<std::string>& stuck_endpoints() const { return stuck_; }

 private:
  // The last lines a process wrote itself ("[name pid]" in Loom's logs, "pid:" in Redis's; an
  // endpoint's workers write to the same log), each on a new indented line.
  std::string OwnLogTail(const std::string& log, pid_t pid) const {
    const std::string p = std::to_string(pid);
    std::vector<std::string> own, any;
    std::istringstream in(fabric_.LogTail(log, 8000));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      any.push_back(line);
      if (line.find(" " + p + "]") != std::string::npos || line.rfind(p + ":", 0) == 0) own.push_back(line);
    }
    const std::vector<std::string>& lines = own.empty() ? any : own;
    std::string tail;
    for (size_t i = lines.size() > 3 ? lines.size() - 3 : 0; i < lines.size(); ++i) tail += "\n      " + lines[i];
    return tail;
  }

  void Unexpected(const std::string& what, const Subprocess& p, const std::string& log) {
    const std::string status = p.exit_status() ? DescribeWaitStatus(*p.exit_status()) : std::string("status unknown");
    const std::string text = what + " (pid " + std::to_string(p.pid()) + ") exited on its own (" + status +
                             "); its log ends:" + OwnLogTail(log, p.pid());
    spdlog::error("{}; restarting it", text);
    unexpected_.push_back(text);
    if (log.rfind("endpoint-", 0) == 0) offline_since_.erase(log.substr(9));
  }

  // Asks the service which endpoints are online and reports any that stays offline although
  // its process runs.
  void ProbeEndpoints() {
    auto client = clients_.Get();
    auto records = client->ListEndpoints();
    clients_.Report(client, records.status());
    if (!records.ok()) return;  // the service is away: no news about the endpoints
    const auto now = Clock::now();
    for (const auto& r : *records) {
      Subprocess* p = fabric_.endpoint(r.id());
      if (p == nullptr) continue;
      if (r.status() == v1::ENDPOINT_STATUS_ONLINE) {
        offline_since_.erase(r.id());
        reported_stuck_.erase(r.id());
        continue;
      }
      const auto since = offline_since_.try_emplace(r.id(), now).first->second;
      if (now - since < stuck_after_ || !reported_stuck_.insert(r.id()).second) continue;
      const std::string text = "endpoint " + r.id() + " (pid " + std::to_string(p->pid()) + ") has been " +
                               v1::EndpointStatus_Name(r.status()) + " for " +
                               std::to_string(static_cast<int64_t>(Seconds(now - since))) +
                               " s although its process runs and no fault stops it; its log ends:" +
                               OwnLogTail("endpoint-" + r.id(), p->pid());
      spdlog::error("{}", text);
      stuck_.push_back(text);
    }
  }

  const std::string& RandomEndpoint() {
    return endpoints_[std::uniform_int_distribution<size_t>(0, endpoints_.size() - 1)(rng_)];
  }

  // How long a killed process stays down before its restart: from at once (a new session may
  // overtake the old one's detection) to past the liveness threshold.
  std::chrono::milliseconds Downtime() {
    const auto max = o_.liveness_threshold() * 3 / 2;
    return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, max.count())(rng_));
  }

  // Restarts a killed process, trying again (and saying why) until it is up.
  bool Restart(const std::string& what, const std::function<Status()>& start) {
    for (int i = 1; i <= kRestartTries; ++i) {
      Status s = start();
      if (s.ok()) return true;
      ++counters_.restart_failures;
      spdlog::warn("restarting {} failed (try {} of {}): {}", what, i, kRestartTries, s.ToString());
      std::this_thread::sleep_for(kRestartPause);  // pacing of restart tries
    }
    spdlog::error("could not restart {}; ending the run", what);
    return false;
  }

  bool Inject(Fault f) {
    switch (f) {
      case Fault::kWorker: {
        const std::string& ep = RandomEndpoint();
        const pid_t ep_pid = fabric_.endpoint(ep)->pid();
        auto workers = loom::testing::ChildPids(ep_pid);
        if (workers.empty()) {
          spdlog::info("fault worker: endpoint {} has no worker right now; nothing killed", ep);
          return true;
        }
        auto it = workers.begin();
        std::advance(it, std::uniform_int_distribution<size_t>(0, workers.size() - 1)(rng_));
        spdlog::info("fault worker: kill -9 worker {} of endpoint {} (pid {})", *it, ep, ep_pid);
        ::kill(*it, SIGKILL);
        return true;
      }
      case Fault::kEndpoint: {
        const std::string ep = RandomEndpoint();
        const auto down = Downtime();
        spdlog::info("fault endpoint: kill -9 endpoint {} (pid {}), restart in {} ms", ep, fabric_.endpoint(ep)->pid(),
                     down.count());
        fabric_.KillEndpoint(ep, SIGKILL);
        std::this_thread::sleep_for(down);  // the fault's downtime
        if (!Restart("endpoint " + ep, [&] { return fabric_.StartEndpoint(ep, o_.workers); })) return false;
        spdlog::info("fault endpoint: endpoint {} is back (pid {})", ep, fabric_.endpoint(ep)->pid());
        offline_since_.erase(ep);
        return true;
      }
      case Fault::kService: {
        const auto down = Downtime();
        spdlog::info("fault service: kill -9 loom-service (pid {}), restart in {} ms", fabric_.service().pid(),
                     down.count());
        fabric_.KillService(SIGKILL);
        std::this_thread::sleep_for(down);  // the fault's downtime
        if (!Restart("loom-service", [&] { return fabric_.StartService(); })) return false;
        spdlog::info("fault service: loom-service is back (pid {})", fabric_.service().pid());
        return true;
      }
      case Fault::kRedis: {
        const auto down = Downtime();
        spdlog::info("fault redis: kill -9 redis-server (pid {}), restart on its AOF in {} ms", fabric_.redis().pid(),
                     down.count());
        fabric_.KillRedis(SIGKILL);
        std::this_thread::sleep_for(down);  // the fault's downtime
        if (!Restart("redis-server", [&] { return fabric_.StartRedis(); })) return false;
        spdlog::info("fault redis: redis-server is back (pid {})", fabric_.redis().pid());
        return true;
      }
      case Fault::kStopEndpoint: {
        const std::string& ep = RandomEndpoint();
        const auto stopped_for = o_.liveness_threshold() * 5 / 2;
        Subprocess* p = fabric_.endpoint(ep);
        spdlog::info("fault stop-endpoint: SIGSTOP endpoint {} (pid {}) for {} ms", ep, p->pid(), stopped_for.count());
        p->Signal(SIGSTOP);
        std::this_thread::sleep_for(stopped_for);  // the fault's length
        p->Signal(SIGCONT);
        spdlog::info("fault stop-endpoint: SIGCONT endpoint {}", ep);
        offline_since_.erase(ep);
        return true;
      }
    }
    return true;
  }

  const Options& o_;
  LocalFabric& fabric_;
  const std::vector<std::string> endpoints_;
  ClientHolder& clients_;
  Counters& counters_;
  RunState& run_;
  std::mt19937_64 rng_;
  std::vector<Fault> enabled_;
  std::vector<std::string> unexpected_;
  const Clock::duration stuck_after_;
  Clock::time_point next_probe_;
  std::map<std::string, Clock::time_point> offline_since_;  // by endpoint id, from the probes
  std::set<std::string> reported_stuck_;
  std::vector<std::string> stuck_;
};

// ---------------------------------------------------------------- checks after the run

// Reads every acknowledged task once more and hands the records to the checker: a second read
// must show the same outcome as the first.
void RereadAll(ClientHolder& clients, DeliveryChecker& checker, const std::vector<std::string>& ids, RunState& run) {
  constexpr size_t kChunk = 1000;
  for (size_t i = 0; i < ids.size() && !run.abort_drain; i += kChunk) {
    std::vector<std::string> chunk(ids.begin() + static_cast<std::ptrdiff_t>(i),
                                   ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + kChunk)));
    for (int tries = 0; tries < 20 && !run.abort_drain; ++tries) {
      auto client = clients.Get();
      auto recs = client->GetTasks(chunk);
      clients.Report(client, recs.status());
      if (recs.ok()) {
        for (const auto& r : *recs) checker.Observed(r);
        break;
      }
      if (!IsTransient(recs.status().code())) {
        // NOT_FOUND names one id; read the others one by one.
        spdlog::error("re-reading {} tasks failed: {}; reading them one by one", chunk.size(),
                      recs.status().ToString());
        for (const std::string& id : chunk) {
          auto r = client->GetStatus(id);
          if (r.ok()) checker.Observed(*r);
        }
        break;
      }
      std::this_thread::sleep_for(500ms);  // pacing of retries
    }
  }
}

// What Redis holds for this run's idempotency keys, read straight from the task records
// (service/redis_keys.h): a key owning two records means a retried submit created a second task
// that the client never heard of, a duplicate the checker cannot see.
struct Audit {
  Status status;
  int64_t records = 0;         // task records with one of this run's keys
  int64_t keys_shared = 0;     // keys owning more than one record
  int64_t other_id = 0;        // acknowledged keys whose one record has another id
  int64_t unacknowledged = 0;  // records of keys never acknowledged (batches given up on)
  std::vector<std::string> examples;
};

Audit AuditRedis(const LocalFabric& fabric, const std::string& key_prefix,
                 const std::unordered_map<std::string, std::string>& id_by_key) {
  namespace keys = loom::service::keys;
  Audit a;
  RedisOptions ro;
  ro.unix_socket = fabric.RedisSocket();
  ro.command_timeout = 10s;
  auto conn = RedisConnection::Connect(ro);
  if (!conn.ok()) {
    a.status = conn.status();
    return a;
  }
  std::unordered_map<std::string, std::vector<std::string>> ids_by_key;
  const std::string match = std::string(keys::kTaskPrefix) + "*";
  std::string cursor = "0";
  do {
    auto reply = (*conn)->Command({"SCAN", cursor, "MATCH", match, "COUNT", "1000"});
    if (!reply.ok()) {
      a.status = reply.status();
      return a;
    }
    const redisReply* r = reply->get();
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      a.status = Internal("SCAN answered something other than [cursor, keys]");
      return a;
    }
    cursor = ReplyString(r->element[0]);
    const redisReply* found = r->element[1];
    for (size_t i = 0; i < found->elements; ++i) {
      (*conn)->Append({"HGET", ReplyString(found->element[i]), keys::field::kIdemKey});
    }
    for (size_t i = 0; i < found->elements; ++i) {
      auto k = (*conn)->GetReply();
      if (!k.ok()) {
        a.status = k.status();
        return a;
      }
      const std::string key = ReplyString(k->get());
      if (key.rfind(key_prefix, 0) != 0) continue;
      ids_by_key[key].push_back(ReplyString(found->element[i]).substr(keys::kTaskPrefix.size()));
      ++a.records;
    }
  } while (cursor != "0");
  for (const auto& [key, ids] : ids_by_key) {
    auto acked = id_by_key.find(key);
    if (ids.size() > 1) {
      if (++a.keys_shared <= static_cast<int64_t>(kShownProblems)) {
        std::string list;
        for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
        a.examples.push_back("key " + key + " owns " + std::to_string(ids.size()) + " tasks: " + list +
                             (acked != id_by_key.end() ? " (acknowledged: " + acked->second + ")" : ""));
      }
    } else if (acked == id_by_key.end()) {
      ++a.unacknowledged;
    } else if (acked->second != ids.front()) {
      if (++a.other_id <= static_cast<int64_t>(kShownProblems)) {
        a.examples.push_back("key " + key + " was acknowledged as task " + acked->second + " but owns task " +
                             ids.front());
      }
    }
  }
  return a;
}

// Prints what the service knows now about a task the checker found a problem with.
void DescribeTask(Client& client, const std::string& id) {
  auto r = client.GetStatus(id);
  if (!r.ok()) {
    std::cout << "    " << id << ": " << r.status().ToString() << "\n";
    return;
  }
  std::cout << "    " << id << ": " << TaskStateName(r->state()) << " on " << r->endpoint() << ", " << r->function()
            << ", key " << r->idempotency_key() << ", attempts " << r->attempts() << "/" << r->max_attempts() << "\n";
  for (const auto& t : Timeline(*r)) {
    std::cout << "      " << t.stage << " @" << t.unix_nanos << " (+" << static_cast<int64_t>(t.since_first_us)
              << " us)\n";
  }
  for (const auto& h : r->attempt_history()) std::cout << "      earlier attempt: " << h.ShortDebugString() << "\n";
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// ---------------------------------------------------------------- main

// Blocks the stop signals in every thread (call before starting any); SignalWaiter reads them.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Turns SIGINT/SIGTERM/SIGHUP into "finish early" (the first) and "stop waiting" (the next).
class SignalWaiter {
 public:
  SignalWaiter(sigset_t set, RunState& run) : set_(set), run_(run) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~SignalWaiter() {
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;

 private:
  void Loop() {
    while (true) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) return;
      if (done_) return;
      if (sig == SIGUSR1) continue;
      if (!run_.interrupted) {
        spdlog::warn("{}: stopping faults and load, then waiting for results and reporting (again to stop waiting)",
                     ::strsignal(sig));
        run_.interrupted = true;
      } else {
        spdlog::warn("{}: no more waiting; reporting now", ::strsignal(sig));
        run_.abort_drain = true;
      }
      run_.Wake();
    }
  }

  sigset_t set_;
  RunState& run_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Stops every process of the fabric however main returns.
struct StopFabric {
  LocalFabric& fabric;
  ~StopFabric() { fabric.StopAll(); }
};

int RunChaos(const Options& o, const sigset_t& signals) {
  RunState run;
  SignalWaiter signal_waiter(signals, run);

  // The state dir: Redis data, logs, endpoint spools.
  const bool own_dir = o.state_dir.empty();
  std::string state_dir = o.state_dir;
  if (own_dir) {
    state_dir = (fs::temp_directory_path() / "loom-chaos-XXXXXX").string();
    if (::mkdtemp(state_dir.data()) == nullptr) {
      std::cerr << "error: cannot create a temporary directory under " << fs::temp_directory_path() << "\n";
      return 2;
    }
  } else {
    state_dir = fs::absolute(state_dir).string();
    std::error_code ec;
    if (fs::exists(fs::path(state_dir) / "redis", ec)) {
      std::cerr << "error: " << state_dir << " holds the Redis data of an earlier run; give an empty or new "
                << "--state-dir\n";
      return 2;
    }
  }
  LocalFabricOptions fo;
  fo.bin_dir = ExecutableDir();
  fo.state_dir = state_dir;
  fo.log_level = o.fabric_log_level;
  fo.service_args = {"--heartbeat-period-ms", std::to_string(o.heartbeat_period_ms), "--heartbeat-misses",
                     std::to_string(o.heartbeat_misses)};
  // Own sessions: a Ctrl-C in the terminal reaches only this program, which then drains the
  // fabric and reports before it stops it (StopFabric). Also, nothing dies with the thread that
  // restarted it.
  fo.detach = true;
  LocalFabric fabric(fo);
  StopFabric stop_fabric{fabric};

  std::vector<std::string> endpoints;
  for (int i = 0; i < o.endpoints; ++i) endpoints.push_back("chaos-ep-" + std::to_string(i));
  std::string fault_list;
  for (const std::string& f : o.faults) fault_list += (fault_list.empty() ? "" : ",") + f;
  spdlog::info(
      "loom-chaos: seed {}, {} s of load at {} tasks/s, a fault every {} s from [{}], {} endpoints x {} "
      "workers, liveness {} ms x {}; state in {}",
      o.seed, o.duration_s, o.rate, o.fault_every_s, fault_list, o.endpoints, o.workers, o.heartbeat_period_ms,
      o.heartbeat_misses, state_dir);
  Status started = fabric.StartRedis();
  if (started.ok()) started = fabric.StartService();
  for (size_t i = 0; i < endpoints.size() && started.ok(); ++i) started = fabric.StartEndpoint(endpoints[i], o.workers);
  if (!started.ok()) {
    std::cerr << "error: the fabric did not start: " << started.ToString() << "\n(logs in " << state_dir << ")\n";
    return 2;
  }
  Counters counters;
  ClientOptions co;
  co.address = fabric.grpc_address();
  co.token = fabric.token();
  co.rpc_timeout = kRpcTimeout;
  co.submit_retries = 0;  // the load generator retries, with the same keys, and counts
  ClientHolder clients(co, counters);
  if (Status s = clients.Connect(); !s.ok()) {
    std::cerr << "error: " << s.ToString() << "\n";
    return 2;
  }
  loom::testing::RegisterBuiltins(*clients.Get());
  if (auto f = clients.Get()->GetFunction("sleep"); !f.ok()) {
    std::cerr << "error: registering the built-in functions failed: " << f.status().ToString() << "\n";
    return 2;
  }

  DeliveryChecker checker;
  Collector collector(clients, checker, counters, run);
  collector.Start();
  LoadGenerator load(o, endpoints, clients, checker, collector, counters, run);
  const auto start = Clock::now();
  const auto load_end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  Progress progress(counters, run, start, load_end);
  progress.Start();
  std::thread load_thread([&] { load.Run(); });

  FaultInjector faults(o, fabric, endpoints, clients, counters, run);
  const bool fabric_whole = faults.Run(load_end);
  const auto load_stopped_at = Clock::now();
  progress.LoadEnded();
  run.load_stopped = true;
  run.Wake();
  load_thread.join();
  spdlog::info("load stopped after {:.1f} s: {} tasks accepted, {} in flight; waiting up to {} s for their results",
               Seconds(load_stopped_at - start), counters.accepted.load(), counters.in_flight(), o.drain_timeout_s);
  const auto drain_start = Clock::now();
  collector.Close(drain_start +
                  std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.drain_timeout_s)));
  // Keep the fabric whole while its last tasks finish.
  bool fabric_kept = fabric_whole;
  while (fabric_kept && !collector.Done() && !run.abort_drain) {
    run.WaitUntil(Clock::now() + kSuperviseEvery, [&] { return run.abort_drain.load(); });
    fabric_kept = faults.Supervise();
  }
  collector.Finish(Clock::now());
  const auto drained_at = Clock::now();
  progress.Stop();
  const std::vector<std::string> unresolved = collector.Unresolved();
  if (!unresolved.empty()) {
    spdlog::error("{} task(s) had no terminal record after {:.1f} s of waiting", unresolved.size(),
                  Seconds(drained_at - drain_start));
  }
  RereadAll(clients, checker, load.acknowledged(), run);
  const Audit audit = AuditRedis(fabric, load.key_prefix(), load.id_by_key());
  const DeliveryChecker::Report report = checker.Check(o.max_attempts);

  // ---------------------------------------------------------------- the report
  const double load_s = Seconds(load_stopped_at - start);
  const std::vector<double> rates = progress.rates();
  const int64_t duplicated = report.duplicated + counters.replay_mismatch + audit.keys_shared + audit.other_id;
  const std::vector<std::string>& exits = faults.unexpected_exits();
  const std::vector<std::string>& stuck = faults.stuck_endpoints();
  const bool ok = report.ok() && duplicated == 0 && fabric_kept && exits.empty() && stuck.empty();
  std::ostringstream faults_line;
  for (size_t k = 0; k < kFaultKinds; ++k) {
    faults_line << (k == 0 ? "" : ", ") << kFaultNames[k] << " " << counters.faults[k].load();
  }
  std::cout << std::fixed << std::setprecision(1) << "\nloom-chaos report: seed " << o.seed << ", " << load_s
            << " s of load" << (run.interrupted ? " (interrupted)" : "") << ", " << o.endpoints << " endpoints x "
            << o.workers << " workers, max_attempts " << o.max_attempts << "\n"
            << "  tasks accepted       " << report.acknowledged << " (" << counters.batches.load() << " batches, "
            << load.sleeps() << " sleep tasks; refused submits retried: UNAVAILABLE "
            << counters.refused_unavailable.load() << ", DEADLINE_EXCEEDED " << counters.refused_deadline.load()
            << ", RESOURCE_EXHAUSTED " << counters.refused_exhausted.load() << ", other "
            << counters.refused_other.load() << "; tasks given up on " << counters.abandoned.load() << ")\n"
            << "  completed (success)  " << report.succeeded << "\n"
            << "  failed               " << report.failed_total() << "\n";
  for (const auto& [reason, count] : report.failed) std::cout << "    " << count << "x " << reason << "\n";
  std::cout << "  cancelled            " << report.cancelled << "\n"
            << "  lost                 " << report.lost << (unresolved.empty() ? "" : " (no terminal record in time)")
            << "\n"
            << "  duplicated           " << duplicated << " (terminal records that differ " << report.duplicated
            << ", keys answered with another id " << counters.replay_mismatch.load() << " in "
            << counters.replays.load() << " replayed batches (" << counters.replays_unchecked.load()
            << " could not be replayed), keys owning several tasks in Redis " << audit.keys_shared
            << ", keys owning another task " << audit.other_id << ")\n"
            << "  unknown              " << report.unknown << "\n"
            << "  over attempts        " << report.over_attempts << "\n"
            << "  wrong values         " << report.wrong_values << "\n"
            << "  faults injected      " << counters.faults_total() << ": " << faults_line.str()
            << " (restart tries that failed: " << counters.restart_failures.load() << ")\n"
            << "  exits on their own   " << exits.size()
            << (exits.empty() ? "" : " (processes restarted although no fault killed them)") << "\n";
  for (const std::string& e : exits) std::cout << "    " << e << "\n";
  std::cout << "  endpoints stuck      " << stuck.size() << "\n";
  for (const std::string& e : stuck) std::cout << "    " << e << "\n";
  std::cout << "  throughput held      " << static_cast<int64_t>(static_cast<double>(counters.completed) / load_s)
            << " tasks/s completed / load time; per " << kProgressEvery.count() << " s interval min "
            << static_cast<int64_t>(rates.empty() ? 0 : *std::min_element(rates.begin(), rates.end())) << ", median "
            << static_cast<int64_t>(Median(rates)) << " (target " << o.rate << " submitted/s)\n"
            << "  drain                " << Seconds(drained_at - drain_start) << " s; client reconnects "
            << counters.reconnects.load() << "\n";
  if (!audit.status.ok())
    std::cout << "  redis audit          not done: " << audit.status.ToString() << "\n";
  else
    std::cout << "  redis audit          " << audit.records << " task records for this run's keys ("
              << audit.unacknowledged << " of batches given up on)\n";
  for (const std::string& e : report.examples) std::cout << "  " << e << "\n";
  for (const std::string& e : audit.examples) std::cout << "  duplicated " << e << "\n";
  if (!report.ok()) {
    std::cout << "  records of the tasks above, as the service has them now:\n";
    size_t shown = 0;
    for (const std::string& e : report.examples) {
      const size_t sp = e.find(' '), colon = e.find(':');
      if (sp == std::string::npos || colon == std::string::npos || colon < sp || ++shown > 10) continue;
      DescribeTask(*clients.Get(), e.substr(sp + 1, colon - sp - 1));
    }
  }
  if (!fabric_kept) std::cout << "  the run ended early: a process could not be restarted\n";
  std::cout << "  result               " << (ok ? "OK" : "VIOLATED") << "\n";

  fabric.StopAll();
  if (own_dir && !o.keep && ok) {
    std::error_code ec;
    fs::remove_all(state_dir, ec);
  } else {
    std::cout << "  state and logs kept in " << state_dir << "\n";
  }
  std::cout << std::flush;
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace loom::chaos

int main(int argc, char** argv) {
  using loom::chaos::Options;
  Options o;
  CLI::App app{
      "loom-chaos: run a whole Loom on this host under load while killing and stopping its processes at random, "
      "then check that no acknowledged task was lost or duplicated. Exit code 0 only if the check holds."};
  app.add_option("--duration-s", o.duration_s, "seconds of load and faults")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--fault-every-s", o.fault_every_s, "seconds between faults")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--endpoints", o.endpoints, "endpoints to start")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--workers", o.workers, "workers per endpoint")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--rate", o.rate, "tasks submitted per second (target)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", o.batch, "tasks per submitted batch")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--max-in-flight", o.max_in_flight, "submitting pauses while this many tasks are unfinished")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-attempts", o.max_attempts, "max_attempts of every task (the check's attempt budget)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--state-dir", o.state_dir,
                 "directory for Redis data, logs and spools (default: a new temporary directory, removed at the end "
                 "unless --keep or the check failed)");
  app.add_flag("--keep", o.keep, "keep the temporary state directory");
  app.add_option("--seed", o.seed, "seed of the fault and load choices (default: random, printed)");
  app.add_option("--faults", o.faults,
                 "comma-separated faults to inject, from: worker,endpoint,service,redis,stop-endpoint")
      ->delimiter(',')
      ->check(CLI::IsMember({"worker", "endpoint", "service", "redis", "stop-endpoint"}))
      ->capture_default_str();
  app.add_option("--heartbeat-period-ms", o.heartbeat_period_ms, "the service's endpoint heartbeat period")
      ->check(CLI::Range(10, 60000))
      ->capture_default_str();
  app.add_option("--heartbeat-misses", o.heartbeat_misses, "missed heartbeats before an endpoint is offline")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--drain-timeout-s", o.drain_timeout_s, "after the load, how long to wait for every result")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "this program's log level: trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--fabric-log-level", o.fabric_log_level, "log level of loom-service and loom-endpoint")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (app.count("--seed") == 0) o.seed = std::random_device{}();
  loom::InitLogging(o.log_level, "loom-chaos");
  const sigset_t signals = loom::chaos::BlockStopSignals();
  return loom::chaos::RunChaos(o, signals);
}
