// Endpoint: the loom-endpoint daemon. Connects out to the service (ZeroMQ DEALER), registers
// its kernels, devices and worker count, asks for tasks with credit (as many as its workers
// can take plus a prefetch), hands them to a pool of loom-worker processes over ipc (ROUTER),
// returns results in batches, sends heartbeats, and replaces workers that die.
//
// Everything runs on the thread that calls Run(): both sockets, the worker processes (their
// deaths arrive through a signalfd for SIGCHLD) and the timers. RequestStop() may be called
// from any thread or a signal handler context via the stop fd.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "common/status.h"
#include "common/subprocess.h"
#include "endpoint/config.h"
#include "loom.pb.h"

namespace loom::endpoint {

class Endpoint {
 public:
  explicit Endpoint(EndpointConfig config);
  ~Endpoint();

  // Binds the worker socket and starts the workers. REQUIRES: called once, before Run().
  Status Start();
  // Serves until RequestStop(); then stops the workers.
  void Run();
  void RequestStop();

 private:
  struct Worker {
    std::string id;
    Subprocess process;
    bool ready = false;
    std::deque<std::string> assigned;  // task ids in the order the worker runs them
    int64_t started_ns = 0;          // when the task at the head of `assigned` started; 0: none
    bool head_started_sent = false;  // the service was told it runs
  };
  struct Held {
    v1::TaskSpec spec;
    int64_t received_ns = 0;
  };

  Status SpawnWorker(const std::string& slot);
  void HandleServiceMessage(const zmq::message_t& msg);
  void HandleWorkerMessage(const std::string& worker_id, const zmq::message_t& msg);
  void ReapWorkers();
  void AssignTasks();
  void SendRegister();
  void SendCreditIfNeeded();
  void Flush();
  void SendToService(const v1::Envelope& env);
  void AddResult(v1::TaskResult result);
  void NoteHeadStarted(Worker& w);
  // Tells the service about tasks running longer than kRunningReportDelay; returns whether a
  // task may still need telling (so the loop wakes up in time).
  bool ReportLongRunning();
  static constexpr std::chrono::microseconds kRunningReportDelay{2000};
  int Capacity() const;
  int Outstanding() const;

  EndpointConfig config_;
  std::string session_id_;
  std::string worker_address_;
  bool owns_run_dir_ = false;

  zmq::context_t ctx_{1};
  zmq::socket_t service_;
  zmq::socket_t workers_sock_;
  int stop_fd_ = -1;
  int child_fd_ = -1;

  std::map<std::string, Worker> workers_;  // by worker id
  int worker_generation_ = 0;
  std::vector<v1::KernelInfo> kernels_;
  bool registered_ = false;
  std::chrono::steady_clock::time_point last_register_sent_{};
  std::chrono::steady_clock::time_point last_heard_from_service_{};
  std::chrono::steady_clock::time_point last_heartbeat_sent_{};
  bool ready_file_written_ = false;

  std::deque<std::string> queue_;                  // received, not yet handed to a worker
  std::unordered_map<std::string, Held> held_;     // every task received and not yet answered
  int64_t requested_ = 0;                          // credit sent that the service has not used yet
  v1::ResultBatch outgoing_;
  int64_t outgoing_bytes_ = 0;
};

}  // namespace loom::endpoint
