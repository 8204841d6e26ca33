#include "common/running_slot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

namespace loom {

// The shared bytes. Both processes run the same build on the same host, so the layout is a
// plain struct; the magic catches a descriptor that is not a slot (a wrong --status-fd).
struct RunningSlot::Layout {
  uint64_t magic;
  // 0: idle. Otherwise the sequence number of the task whose kernel runs. The writer stores the
  // id first and then this (release), and sets it back to 0 before it writes another id, so a
  // non-zero value always comes with a complete id, wherever a SIGKILL stopped the writer. The
  // reader reads after the writer's death, which the kernel orders after every store the writer
  // made; what remains to order is the compiler's placement of the stores (see Begin).
  std::atomic<uint64_t> running;
  uint64_t id_size;  // the running task's full id size; only the first kMaxIdBytes are kept
  char id[kMaxIdBytes];
};

namespace {

constexpr uint64_t kMagic = 0x31544f4c534d4f4cULL;  // "LOMSLOT1", little-endian
// A lock-free atomic is address-free: it works between processes that map the same page.
static_assert(std::atomic<uint64_t>::is_always_lock_free);

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

Result<RunningSlot> RunningSlot::Create() {
  int fd = ::memfd_create("loom-running-slot", MFD_CLOEXEC);
  if (fd < 0) return Internal(Errno("memfd_create"));
  if (fd <= 2) {
    // The endpoint runs with a closed stdio descriptor; a child's stdio set-up would clobber it.
    const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    const int saved = errno;
    ::close(fd);
    errno = saved;
    if (high < 0) return Internal(Errno("fcntl(F_DUPFD_CLOEXEC)"));
    fd = high;
  }
  if (::ftruncate(fd, sizeof(Layout)) != 0) {
    const std::string why = Errno("ftruncate");
    ::close(fd);
    return Internal(why);
  }
  void* p = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const std::string why = Errno("mmap");
    ::close(fd);
    return Internal(why);
  }
  // The fresh mapping is zero-filled: idle, no id. Constructing the atomic in place starts its lifetime.
  auto* layout = new (p) Layout{kMagic, {0}, 0, {}};
  return RunningSlot(layout, fd);
}

Result<RunningSlot> RunningSlot::Attach(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return InvalidArgument(Errno(("--status-fd " + std::to_string(fd)).c_str()));
  if (static_cast<size_t>(st.st_size) < sizeof(Layout)) {
    return InvalidArgument("--status-fd " + std::to_string(fd) + " is not a running slot (" +
                           std::to_string(st.st_size) + " bytes); only loom-endpoint passes this flag");
  }
  void* p = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return InvalidArgument(Errno(("--status-fd " + std::to_string(fd) + ": mmap").c_str()));
  ::close(fd);
  auto* layout = static_cast<Layout*>(p);
  if (layout->magic != kMagic) {
    ::munmap(p, sizeof(Layout));
    return InvalidArgument("--status-fd " + std::to_string(fd) +
                           " is not a running slot (wrong magic); only loom-endpoint passes this flag");
  }
  return RunningSlot(layout, -1);
}

RunningSlot::RunningSlot(RunningSlot&& o) noexcept : layout_(o.layout_), fd_(o.fd_), sequence_(o.sequence_) {
  o.layout_ = nullptr;
  o.fd_ = -1;
}

RunningSlot& RunningSlot::operator=(RunningSlot&& o) noexcept {
  if (this != &o) {
    Reset();
    layout_ = o.layout_;
    fd_ = o.fd_;
    sequence_ = o.sequence_;
    o.layout_ = nullptr;
    o.fd_ = -1;
  }
  return *this;
}

RunningSlot::~RunningSlot() { Reset(); }

void RunningSlot::Reset() {
  if (layout_ != nullptr) ::munmap(layout_, sizeof(Layout));
  layout_ = nullptr;
  CloseFd();
}

void RunningSlot::CloseFd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RunningSlot::Begin(std::string_view task_id) {
  LOOM_CHECK(layout_ != nullptr);
  // `running` is 0 here (End() ran, or nothing ran yet), so a reader ignores the id while it
  // changes. A SIGKILL is to this thread what a signal handler is: the fence keeps the compiler
  // from moving the id's stores above End()'s store of 0.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  layout_->id_size = task_id.size();
  std::memcpy(layout_->id, task_id.data(), std::min(task_id.size(), kMaxIdBytes));
  layout_->running.store(++sequence_, std::memory_order_release);
}

void RunningSlot::End() {
  LOOM_CHECK(layout_ != nullptr);
  layout_->running.store(0, std::memory_order_release);
}

RunningSlot::Reading RunningSlot::Read() const {
  LOOM_CHECK(layout_ != nullptr);
  Reading r;
  r.sequence = layout_->running.load(std::memory_order_acquire);
  if (r.sequence == 0) return r;
  if (layout_->id_size > kMaxIdBytes) {
    r.state = Reading::State::kUnknown;
    return r;
  }
  r.state = Reading::State::kRunning;
  r.task_id.assign(layout_->id, layout_->id_size);
  return r;
}

}  // namespace loom
