#include "endpoint/metrics.h"

#include <string_view>

namespace loom::endpoint {

namespace pm = prometheus;

EndpointMetrics::EndpointMetrics(int worker_slots) : registry_(std::make_shared<pm::Registry>()) {
  auto& r = *registry_;
  received_ = &pm::BuildCounter()
                   .Name("loom_endpoint_tasks_received_total")
                   .Help("Tasks received from the service")
                   .Register(r)
                   .Add({});
  handoffs_ = &pm::BuildCounter()
                   .Name("loom_endpoint_worker_handoffs_total")
                   .Help("Messages handing tasks to a worker; tasks received over handoffs is the tasks per message")
                   .Register(r)
                   .Add({});
  auto& completed = pm::BuildCounter()
                        .Name("loom_endpoint_tasks_completed_total")
                        .Help("Results recorded for the service, by outcome: success or failed")
                        .Register(r);
  completed_ok_ = &completed.Add({{"outcome", "success"}});
  completed_failed_ = &completed.Add({{"outcome", "failed"}});
  spooled_ = &pm::BuildCounter()
                  .Name("loom_endpoint_results_spooled_total")
                  .Help("Results written to the spool before being sent")
                  .Register(r)
                  .Add({});
  auto& restarts = pm::BuildCounter()
                       .Name("loom_endpoint_worker_restarts_total")
                       .Help(
                           "Workers replaced, by reason: crash (died by itself), timeout (killed: task past its "
                           "deadline), cancel (killed: its running task was cancelled)")
                       .Register(r);
  restart_crash_ = &restarts.Add({{"reason", "crash"}});
  restart_timeout_ = &restarts.Add({{"reason", "timeout"}});
  restart_cancel_ = &restarts.Add({{"reason", "cancel"}});
  reconnects_ = &pm::BuildCounter()
                     .Name("loom_endpoint_reconnects_total")
                     .Help("Fresh connections opened to the service after it fell silent")
                     .Register(r)
                     .Add({});
  drops_ = &pm::BuildCounter()
                .Name("loom_endpoint_connection_drops_total")
                .Help("Times the connection to the service dropped (ZeroMQ reconnects by itself)")
                .Register(r)
                .Add({});
  heartbeat_misses_ = &pm::BuildCounter()
                           .Name("loom_endpoint_heartbeat_misses_total")
                           .Help("Heartbeat periods that passed without a word from the service")
                           .Register(r)
                           .Add({});
  registrations_ = &pm::BuildCounter()
                        .Name("loom_endpoint_registrations_total")
                        .Help("Registrations the service accepted (one per session start or re-registration)")
                        .Register(r)
                        .Add({});
  handshake_failures_ = &pm::BuildCounter()
                             .Name("loom_endpoint_handshake_failures_total")
                             .Help("ZeroMQ handshakes with the service that failed (e.g. a CURVE key it refused)")
                             .Register(r)
                             .Add({});
  auto& refused = pm::BuildCounter()
                      .Name("loom_endpoint_tasks_refused_total")
                      .Help("Tasks refused by this endpoint's allow-list without running, by reason: user or function")
                      .Register(r);
  refused_user_ = &refused.Add({{"reason", "user"}});
  refused_function_ = &refused.Add({{"reason", "function"}});
  auto& workers = pm::BuildGauge()
                      .Name("loom_endpoint_workers")
                      .Help("Worker processes by state: busy (has tasks), idle (ready, no task), starting")
                      .Register(r);
  busy_ = &workers.Add({{"state", "busy"}});
  idle_ = &workers.Add({{"state", "idle"}});
  starting_ = &workers.Add({{"state", "starting"}});
  pm::BuildGauge()
      .Name("loom_endpoint_worker_slots")
      .Help("Workers this endpoint runs (--workers)")
      .Register(r)
      .Add({})
      .Set(worker_slots);
  held_ = &pm::BuildGauge()
               .Name("loom_endpoint_tasks_held")
               .Help("Tasks received and not yet answered (queued here or with a worker)")
               .Register(r)
               .Add({});
  queued_ = &pm::BuildGauge()
                 .Name("loom_endpoint_tasks_queued")
                 .Help("Tasks received and not yet handed to a worker")
                 .Register(r)
                 .Add({});
  unacked_ = &pm::BuildGauge()
                  .Name("loom_endpoint_results_unacknowledged")
                  .Help("Results the service has not acknowledged yet (kept in the spool)")
                  .Register(r)
                  .Add({});
  spool_bytes_ = &pm::BuildGauge()
                      .Name("loom_endpoint_spool_bytes")
                      .Help("Size of the spool's segment files on disk")
                      .Register(r)
                      .Add({});
  registered_ = &pm::BuildGauge()
                     .Name("loom_endpoint_registered")
                     .Help("1 while registered with the service, else 0")
                     .Register(r)
                     .Add({});
  kernel_ = &pm::BuildHistogram()
                 .Name("loom_endpoint_kernel_seconds")
                 .Help("Time a kernel ran (worker_started to kernel_finished, on the worker)")
                 .Register(r)
                 .Add({}, metrics::LatencyBuckets());
  at_endpoint_ = &pm::BuildHistogram()
                      .Name("loom_endpoint_task_seconds")
                      .Help("Time a task spent on this endpoint, from its arrival to its result")
                      .Register(r)
                      .Add({}, metrics::LatencyBuckets());
}

void EndpointMetrics::ResultAdded(const v1::TaskResult& result) {
  (result.ok() ? completed_ok_ : completed_failed_)->Increment();
  int64_t started = 0, finished = 0, received = 0, answered = 0;
  for (const auto& t : result.timestamps()) {
    const std::string_view s = t.stage();
    if (s == "worker_started") {
      started = t.unix_nanos();
    } else if (s == "kernel_finished") {
      finished = t.unix_nanos();
    } else if (s == "endpoint_received") {
      received = t.unix_nanos();
    } else if (s == "endpoint_result") {
      answered = t.unix_nanos();
    }
  }
  if (started != 0 && finished != 0) kernel_batch_.Add(static_cast<double>(finished - started) * 1e-9);
  if (received != 0 && answered != 0) at_endpoint_batch_.Add(static_cast<double>(answered - received) * 1e-9);
}

void EndpointMetrics::WorkerRestarted(WorkerExit why) {
  switch (why) {
    case WorkerExit::kCrash:
      restart_crash_->Increment();
      break;
    case WorkerExit::kTimeout:
      restart_timeout_->Increment();
      break;
    case WorkerExit::kCancel:
      restart_cancel_->Increment();
      break;
  }
}

void EndpointMetrics::SetState(const State& s) {
  busy_->Set(s.busy);
  idle_->Set(s.idle);
  starting_->Set(s.starting);
  held_->Set(static_cast<double>(s.held));
  queued_->Set(static_cast<double>(s.queued));
  unacked_->Set(static_cast<double>(s.unacked));
  spool_bytes_->Set(static_cast<double>(s.spool_bytes));
  registered_->Set(s.registered ? 1 : 0);
}

void EndpointMetrics::FlushRound() {
  kernel_batch_.FlushTo(*kernel_);
  at_endpoint_batch_.FlushTo(*at_endpoint_);
}

}  // namespace loom::endpoint
