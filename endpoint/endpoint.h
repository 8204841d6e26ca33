// Endpoint: the loom-endpoint daemon. Connects out to the service (ZeroMQ DEALER), registers
// its kernels, devices and worker count, asks for tasks with credit (as many as its workers
// can take plus a prefetch), hands them to a pool of loom-worker processes (each on a socketpair
// of its own, FrameLink; in a container, or a block's, over the ROUTER socket), returns results
// in batches, sends heartbeats, and replaces workers that die.
//
// Nothing lost: every result is written to a spool on disk and kept until the service
// acknowledges it; unacknowledged results are sent again after a re-registration or a
// timeout, also after a restart of this process. When the service falls silent the endpoint
// reconnects (a fresh connection) and registers again with backoff. A cancelled or overdue
// running task has its worker killed and replaced. A worker that dies is charged with the task
// its RunningSlot names (common/running_slot.h), the one whose kernel was running; every other
// task it held goes back to the queue, to run again if it had finished with its result lost.
//
// With CURVE keys configured it connects as a CURVE client (the service authenticates it by
// its key), and with an owner set it refuses, without running them, the tasks its allow-list
// does not admit (common/allow_list.h), whatever the service sent: a refusal is a failed
// result (FAILURE_KIND_REJECTED) that says why.
//
// Everything runs on the thread that calls Run(): both sockets, the worker processes (their
// deaths arrive through a signalfd for SIGCHLD) and the timers. RequestStop() may be called
// from any thread or a signal handler context via the stop fd. Metrics (optional) are counted
// on that thread too, and read by their exposer's threads.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include "common/allow_list.h"
#include "common/curve.h"
#include "common/frame_link.h"
#include "common/launch.h"
#include "common/log_limiter.h"
#include "common/running_slot.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "endpoint/block_pool.h"
#include "endpoint/command_runner.h"
#include "endpoint/config.h"
#include "endpoint/credit_window.h"
#include "endpoint/metrics.h"
#include "endpoint/spool.h"
#include "endpoint/task_pacer.h"
#include "endpoint/worker_death.h"
#include "loom.pb.h"

namespace loom::endpoint {

class Endpoint {
 public:
  // `metrics` (may be null: none) must outlive the endpoint.
  explicit Endpoint(EndpointConfig config, EndpointMetrics* metrics = nullptr);
  ~Endpoint();

  // Binds the worker socket and starts the workers. REQUIRES: called once, before Run().
  Status Start();
  // Serves until RequestStop(); then stops the workers.
  void Run();
  void RequestStop();
  // True once the service fenced this endpoint off (another process registered the same id).
  bool fenced() const { return fenced_; }
  // An extra KEY=VALUE line for the ready file (e.g. the metrics address). REQUIRES: before Run().
  void AddReadyInfo(const std::string& key, const std::string& value) { ready_info_ += key + "=" + value + "\n"; }

 private:
  struct Worker {
    std::string id;
    Subprocess process;
    // Shared with the worker: the task whose kernel it runs. nullopt: none could be made, and a
    // death is charged to the head of `assigned`.
    std::optional<RunningSlot> slot;
    bool ready = false;
    bool greeted = false;              // said hello once: it started (a worker that never does failed to start)
    std::deque<std::string> assigned;  // task ids in the order the worker runs them
    int64_t started_ns = 0;            // when the task at the head of `assigned` started; 0: none
    bool head_started_sent = false;    // the service was told it runs
    // Set when this endpoint killed the worker on purpose, for the task at the head then.
    v1::FailureKind kill_reason = v1::FAILURE_KIND_UNSPECIFIED;  // TIMEOUT, or UNSPECIFIED: cancelled
    std::string kill_task;
    std::vector<std::string> cleanup;  // run once the process ended (common/launch.h)
    // Set for a worker of a block (started by the block's manager, connected over TCP): not our
    // child, so its loss is learned from its job ending, its slot being taken over, or a kill.
    std::string block;
    bool lost = false;  // a block worker given up on (killed for a deadline or cancel, or replaced)
    // Set for a worker this endpoint started with a socket of its own (worker_link "socket"):
    // its messages go over this, not the ROUTER socket.
    std::unique_ptr<FrameLink> link;
  };
  // A result the service has not acknowledged, kept serialized (the spool writes and keeps the
  // same bytes): a message tree a result cost the endpoint a copy when sent and a teardown when
  // acknowledged.
  struct Unacked {
    std::string payload;                           // the serialized v1::TaskResult
    std::chrono::steady_clock::time_point sent{};  // last sent; default: not yet
  };
  struct Held {
    v1::TaskSpec spec;
    int64_t received_ns = 0;
    int64_t service_sent_ns = 0;  // the service's send time (TaskBatch.sent_unix_nanos); 0: unknown
    int64_t bytes = 0;            // the spec's size
    // When the service's write that dispatched it returned (TaskBatch.committed_unix_nanos); 0: unknown.
    int64_t service_committed_ns = 0;
    // When the service leased it from its queue (TaskBatch.leased_unix_nanos); 0: the submit dispatched it.
    int64_t leased_ns = 0;
  };

  Status SpawnWorker(const std::string& slot);
  // Fills devices_ (CPUs, GPUs from nvidia-smi, the config's devices) and, with workers_per_gpu,
  // the worker count and each slot's CUDA_VISIBLE_DEVICES.
  void DiscoverDevices();
  // The worker's command line as the config's container/sandbox sections say (launch.h).
  Result<LaunchCommand> WrapForLaunch(const std::string& worker_id, LaunchCommand worker) const;
  // Starts a worker's clean-up command (removes a container whose client was killed).
  void RunCleanup(const std::vector<std::string>& cleanup);
  void HandleServiceMessage(const zmq::message_t& msg);
  // Queues the tasks of a batch this endpoint admits; answers the others with a refusal.
  void AcceptTasks(v1::TaskBatch& batch);
  // Loads the CURVE keys and the allow-list from the config.
  Status LoadSecurity();
  void HandleWorkerMessage(const std::string& worker_id, std::string_view msg);
  // Handles what the worker's own socket (Worker::link) holds.
  void ReadWorkerLink(Worker& w);
  // The worker's socket broke: the worker is killed, and ReapWorkers replaces it.
  void LinkBroke(Worker& w);
  void ReapWorkers();
  void RestartDueWorkers();  // the slots in restarts_ whose time has come
  void AssignTasks();
  void SendRegister();
  void SendCreditIfNeeded();
  void Flush();
  void SendToService(const v1::Envelope& env);
  // Times a worker's result for its kernel (pacer_); AddResult calls it for the tasks it held.
  void ObservePace(const std::string& kernel, const v1::TaskResult& r);
  // Records a result: spooled, kept until acknowledged, and queued to send.
  void AddResult(v1::TaskResult result);
  // Adds a result to the next message to the service; `size` is its serialized size.
  void QueueToSend(v1::TaskResult result, int64_t size);
  // Sends again every unacknowledged result sent before `before`.
  void ResendUnacked(std::chrono::steady_clock::time_point before);
  void HandleAck(const v1::ResultAck& ack);
  void HandleCancel(const v1::CancelTasks& cancel);
  // Kills a worker on purpose; its head task ends as `reason` (UNSPECIFIED: dropped, cancelled).
  void KillWorker(Worker& w, v1::FailureKind reason);
  // Kills workers whose running task passed its deadline; returns ms until the next deadline.
  int64_t EnforceDeadlines();
  Status Reconnect();
  // Reads connection events of the service socket: a new connection (after a drop) means the
  // service may have lost messages in both directions, so the endpoint registers again.
  void HandleMonitorEvents();
  void StopMonitor();
  Status OpenSpool();
  void NoteHeadStarted(Worker& w);
  // Tells the service about tasks running longer than kRunningReportDelay; returns whether a
  // task may still need telling (so the loop wakes up in time).
  bool ReportLongRunning();
  // 10 ms, not less: on a loaded host a worker often picks a task up more than 2 ms after it
  // was handed over (43 % of the tasks of the 100 x 10 benchmark, each one more Redis write).
  static constexpr std::chrono::microseconds kRunningReportDelay{10000};
  int Capacity() const;
  int Outstanding() const;
  // Tasks to ask for now beyond the credit already asked for: what Capacity() leaves, within
  // queue_bytes (CreditWindow).
  int64_t CreditRoom() const;
  // Sets the metrics' state gauges and flushes the round's histograms.
  void UpdateMetrics();

  // The death of worker `w` (already out of workers_): its running task fails as WORKER_LOST (or
  // as what it was killed for), the ones waiting behind it go back to the queue.
  void HandleWorkerLoss(Worker& w, const std::string& how);
  // Worker slots in use: `workers`, or the connected block workers.
  int WorkerSlots() const;

  // Blocks (a provider is configured; endpoint_blocks.cc).
  // Binds the TCP worker address, makes the provider and submits the first blocks.
  Status StartBlocks();
  // Polls the blocks' jobs and scales; the workers of ended blocks are lost.
  void TickBlocks();
  // A message from a worker this endpoint does not know: a block's worker says hello, or one it
  // had given up on speaks again. Returns the new entry, or null (not a worker of a live block).
  Worker* AdmitBlockWorker(const std::string& worker_id);
  // What each node of a block runs: loom-manager with this endpoint's worker address.
  std::vector<std::string> ManagerCommand(const std::string& block_id) const;
  // Cancels every block and waits until their jobs are over.
  void StopBlocks();

  EndpointConfig config_;
  EndpointMetrics* metrics_;
  std::unique_ptr<SystemCommandRunner> command_runner_;
  std::unique_ptr<BlockPool> blocks_;  // set: workers come in blocks
  std::string block_worker_address_;   // what the managers connect their workers to
  std::chrono::steady_clock::time_point last_block_tick_{};
  std::optional<curve::KeyPair> curve_keys_;  // set: connect with CURVE
  std::string service_public_key_;
  std::optional<AllowList> allow_;  // set: check every task
  LogLimiter log_refusals_{10};
  bool handshake_failure_logged_ = false;  // since the last handshake that succeeded
  std::string ready_info_;
  std::string session_id_;
  std::string worker_address_;
  bool owns_run_dir_ = false;

  zmq::context_t ctx_{1};
  zmq::socket_t service_;
  zmq::socket_t monitor_;  // PAIR reading service_'s connection events
  // Run() asks monitor_ and worker_zap_ for waiting input (ZMQ_EVENTS) once after either is
  // made, then relies on their fds (see Run()).
  bool recheck_quiet_sockets_ = true;
  // Run() asks workers_sock_ for waiting input only after the loop used it (a send or a read):
  // with every worker on a link of its own, the ROUTER socket is quiet.
  bool recheck_workers_sock_ = true;
  int monitor_generation_ = 0;
  bool connected_ = false;  // the ZeroMQ handshake with the service succeeded and holds
  zmq::socket_t workers_sock_;
  int stop_fd_ = -1;
  int child_fd_ = -1;

  std::map<std::string, Worker> workers_;  // by worker id
  std::vector<Subprocess> cleanups_;       // clean-up commands still running
  int worker_generation_ = 0;
  // A local worker slot whose worker died before it said hello (a missing binary or library, a
  // sandbox that cannot start it) is restarted with backoff, 0.5 s doubling to 30 s, instead
  // of in a tight loop; one that started once is replaced at once.
  struct Restart {
    std::chrono::milliseconds backoff{0};
    std::chrono::steady_clock::time_point at{};  // default: no restart pending
  };
  std::map<std::string, Restart> restarts_;  // by slot ("w0")
  bool running_slot_warned_ = false;
  std::vector<v1::KernelInfo> kernels_;
  std::vector<v1::Device> devices_;                   // advertised at registration
  std::vector<std::vector<std::string>> worker_env_;  // per worker slot: CUDA_VISIBLE_DEVICES when pinned
  bool registered_ = false;
  bool fenced_ = false;
  std::chrono::milliseconds register_backoff_{100};  // doubles while registering goes unanswered
  std::chrono::steady_clock::time_point last_connect_{};
  std::chrono::steady_clock::time_point last_register_sent_{};
  std::chrono::steady_clock::time_point last_heard_from_service_{};
  std::chrono::steady_clock::time_point last_heartbeat_sent_{};
  bool ready_file_written_ = false;

  std::deque<std::string> queue_;                     // received, not yet handed to a worker
  std::unordered_map<std::string, Held> held_;        // every task received and not yet answered
  TaskPacer pacer_;                                   // which kernels are short (AssignTasks packs them)
  CreditWindow window_;                               // credit bounded by the bytes held (queue_bytes)
  int64_t held_bytes_ = 0;                            // the specs of held_
  std::unordered_map<std::string, Unacked> unacked_;  // results the service has not acknowledged
  std::unordered_set<std::string> cancelled_;         // cancelled while queued in a worker: drop the result
  UnchargedDeaths uncharged_deaths_{2};               // a head-of-queue task at 2 such deaths is charged
  std::unique_ptr<ResultSpool> spool_;
  std::vector<std::string> to_spool_;  // ids of unacked_ results to spool at the next flush
  int64_t requested_ = 0;              // credit sent that the service has not used yet
  v1::ResultBatch outgoing_;
  // Acks that came with tasks: applied once the loop has handed the tasks to workers and sent
  // its results, so the spool's write for them is not on those paths.
  v1::ResultAck riding_acks_;
  int64_t outgoing_bytes_ = 0;
  // Blocks: the TCP worker socket is a CURVE server with a key pair of this run, and admits only
  // clients holding this run's worker key pair, checked by a ZAP handler served on this thread
  // (ServeWorkerZap). Declared after ctx_: closed before it.
  curve::KeyPair block_server_keys_;
  curve::KeyPair block_worker_keys_;
  std::string block_key_file_;     // the workers' key pair, 0600, in the blocks' script directory
  std::string block_launch_file_;  // set: the workers' container/sandbox settings for loom-manager
  zmq::socket_t worker_zap_;
  // Answers the ZAP requests waiting on worker_zap_: a block worker's CURVE key is this run's
  // worker key, or the connection is refused (and logged, rate-limited).
  void ServeWorkerZap();
};

// What a block's loom-manager is told besides the endpoint config (endpoint_blocks.cc).
struct BlockManagerSettings {
  std::string worker_address;  // tcp://HOST:PORT the workers connect to
  std::string block_id;
  std::string worker_key_file;      // the workers' CURVE key pair
  std::string endpoint_public_key;  // the worker socket's CURVE public key
  std::string launch_file;          // empty: the workers run bare
};
// The command line of loom-manager on each node of a block.
std::vector<std::string> BlockManagerArgv(const EndpointConfig& config, const BlockManagerSettings& settings);

}  // namespace loom::endpoint
