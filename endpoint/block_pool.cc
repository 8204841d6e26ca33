#include "endpoint/block_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace loom::endpoint {

ScalingDecision DecideScaling(const ScalingPolicy& policy, int64_t demand, const std::vector<BlockLoad>& active) {
  ScalingDecision d;
  const int64_t slots = std::max(1, policy.slots_per_block);
  const int64_t wanted = (std::max<int64_t>(demand, 0) + slots - 1) / slots;
  const int target = static_cast<int>(std::clamp<int64_t>(wanted, policy.min_blocks, policy.max_blocks));
  const int have = static_cast<int>(active.size());
  if (have < target) {
    d.add = target - have;
    return d;
  }
  std::vector<BlockLoad> idle;
  for (const auto& b : active) {
    if (b.idle_for >= policy.max_idletime) idle.push_back(b);
  }
  std::sort(idle.begin(), idle.end(), [](const BlockLoad& a, const BlockLoad& b) {
    return a.idle_for != b.idle_for ? a.idle_for > b.idle_for : a.block_id < b.block_id;
  });
  const int surplus = have - target;
  for (int i = 0; i < surplus && i < static_cast<int>(idle.size()); ++i) d.release.push_back(idle[i].block_id);
  return d;
}

BlockPool::BlockPool(BlockPoolOptions options, std::unique_ptr<Provider> provider)
    : options_(std::move(options)), provider_(std::move(provider)) {}

bool BlockPool::Releasing(const std::string& block_id) const {
  auto it = blocks_.find(block_id);
  return it != blocks_.end() && it->second.releasing;
}

int BlockPool::ActiveBlocks() const {
  return static_cast<int>(
      std::count_if(blocks_.begin(), blocks_.end(), [](const auto& b) { return !b.second.releasing; }));
}

int BlockPool::RunningBlocks() const {
  return static_cast<int>(std::count_if(blocks_.begin(), blocks_.end(), [](const auto& b) {
    return !b.second.releasing && b.second.state == JobState::kRunning;
  }));
}

void BlockPool::SubmitOne(SteadyTime now, TickResult* result) {
  const std::string id = options_.block_id_prefix + std::to_string(next_block_++);
  BlockSpec spec;
  spec.block_id = id;
  spec.job_name = options_.job_name_prefix + "-" + id;
  spec.nodes = options_.provider.nodes_per_block;
  spec.walltime = options_.walltime;
  spec.manager_command = options_.manager_command(id);
  spec.worker_init = options_.provider.worker_init;
  spec.script_path = options_.script_dir + "/" + id + ".sh";
  spec.output_path = options_.script_dir + "/" + id + ".out";
  auto job = provider_->Submit(spec);
  if (!job.ok()) {
    ++submit_failures_;
    last_error_ = job.status().message();
    // Back off: a refused script is refused again until someone fixes the config.
    const auto backoff = std::min<std::chrono::milliseconds>(
        options_.poll_period * (1 << std::min(submit_failures_, 6)), std::chrono::minutes(5));
    next_submit_ = now + backoff;
    uint64_t held = 0;
    if (log_limit_.Allow(now, &held)) {
      spdlog::error("cannot start block {} ({} provider): {}; trying again in {} ms", id, provider_->name(),
                    last_error_, backoff.count());
    }
    return;
  }
  submit_failures_ = 0;
  spdlog::info("block {} submitted to the {} provider as job {}", id, provider_->name(), *job);
  blocks_[id] = Block{*job, JobState::kPending, now, false};
  result->submitted.push_back(id);
}

void BlockPool::Poll(SteadyTime now, TickResult* result) {
  next_poll_ = now + options_.poll_period;
  if (blocks_.empty()) return;
  std::vector<std::string> jobs;
  for (const auto& [id, b] : blocks_) jobs.push_back(b.job_id);
  auto states = provider_->Poll(jobs);
  if (!states.ok()) {
    uint64_t held = 0;
    if (log_limit_.Allow(now, &held)) spdlog::warn("cannot poll the blocks' jobs: {}", states.status().message());
    return;
  }
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    auto st = states->find(it->second.job_id);
    if (st == states->end()) {
      ++it;
      continue;
    }
    Block& b = it->second;
    if (!JobEnded(st->second.state)) {
      if (b.state != st->second.state && st->second.state == JobState::kRunning) {
        spdlog::info("block {} (job {}) is running", it->first, b.job_id);
        b.idle_since = now;  // idleness counts from the start, not from the submit
      }
      b.state = st->second.state;
      ++it;
      continue;
    }
    if (b.releasing) {
      spdlog::info("block {} (job {}) released ({})", it->first, b.job_id, st->second.detail);
    } else {
      spdlog::warn("block {} (job {}) ended: {} ({}); its tasks run again elsewhere", it->first, b.job_id,
                   JobStateName(st->second.state), st->second.detail);
    }
    result->ended.push_back(EndedBlock{it->first, b.job_id, st->second, b.releasing});
    it = blocks_.erase(it);
  }
  // A job that failed before it ran (rejected after submission) was never going to start: cancel
  // any copy the scheduler still holds.
  std::vector<std::string> hopeless;
  for (const auto& e : result->ended) {
    if (e.status.state == JobState::kFailed && !e.released) hopeless.push_back(e.job_id);
  }
  if (!hopeless.empty()) (void)provider_->Cancel(hopeless);
}

BlockPool::TickResult BlockPool::Tick(SteadyTime now, int64_t demand, const std::set<std::string>& busy_blocks,
                                      bool force_poll) {
  TickResult result;
  if (!started_) {
    started_ = true;
    for (int i = 0; i < options_.init_blocks; ++i) SubmitOne(now, &result);
    next_poll_ = now + options_.poll_period;
  }
  if (force_poll || now >= next_poll_) Poll(now, &result);
  std::vector<BlockLoad> active;
  for (auto& [id, b] : blocks_) {
    if (busy_blocks.contains(id)) b.idle_since = now;
    if (b.releasing) continue;
    active.push_back({id, std::chrono::duration_cast<std::chrono::milliseconds>(now - b.idle_since)});
  }
  const ScalingDecision d = DecideScaling(options_.policy, demand, active);
  for (int i = 0; i < d.add && now >= next_submit_; ++i) SubmitOne(now, &result);
  if (!d.release.empty()) {
    std::vector<std::string> jobs;
    for (const auto& id : d.release) {
      Block& b = blocks_.at(id);
      b.releasing = true;
      jobs.push_back(b.job_id);
      result.released.push_back(id);
      spdlog::info("releasing block {} (job {}): idle for {} ms", id, b.job_id,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - b.idle_since).count());
    }
    Status s = provider_->Cancel(jobs);
    if (!s.ok()) spdlog::warn("cannot release {} block(s): {}", jobs.size(), s.message());
    // Learn soon that they are over.
    next_poll_ = std::min(next_poll_, now + std::min(options_.poll_period, std::chrono::milliseconds(500)));
  }
  return result;
}

std::vector<std::string> BlockPool::Shutdown(std::chrono::milliseconds timeout,
                                             const std::function<void(std::chrono::milliseconds)>& wait) {
  std::vector<std::string> jobs;
  for (auto& [id, b] : blocks_) {
    b.releasing = true;
    jobs.push_back(b.job_id);
  }
  if (jobs.empty()) return {};
  spdlog::info("cancelling {} block(s)", jobs.size());
  Status s = provider_->Cancel(jobs);
  if (!s.ok()) spdlog::warn("cannot cancel the blocks: {}", s.message());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::milliseconds pause(50);
  while (true) {
    auto states = provider_->Poll(jobs);
    std::vector<std::string> left;
    if (states.ok()) {
      for (const auto& j : jobs) {
        auto it = states->find(j);
        if (it == states->end() || !JobEnded(it->second.state)) left.push_back(j);
      }
    } else {
      left = jobs;
    }
    if (left.empty() || std::chrono::steady_clock::now() >= deadline) {
      blocks_.clear();
      if (!left.empty()) spdlog::warn("{} block job(s) still not over after cancelling them", left.size());
      return left;
    }
    jobs = left;
    wait(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(1000));
  }
}

}  // namespace loom::endpoint
