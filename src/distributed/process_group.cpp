#include "albef/distributed/process_group.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>

namespace albef::distributed {
namespace {

int env_int(const char* name, int fallback, int min_value) {
  const char* text = std::getenv(name);
  if (!text || !*text) return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < min_value || value > (1 << 30))
    fail("environment variable ", name, "='", text, "' is not an integer >= ", min_value);
  return static_cast<int>(value);
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// Where this rank is, as its peers should name it in errors: the IPv4
// address of GLOO_SOCKET_IFNAME, else the host's name.
std::string own_address(const std::string& interface, const std::string& master_addr) {
  if (!interface.empty()) {
    ifaddrs* all = nullptr;
    std::string found;
    if (getifaddrs(&all) == 0) {
      for (const ifaddrs* at = all; at && found.empty(); at = at->ifa_next)
        if (at->ifa_addr && at->ifa_addr->sa_family == AF_INET && interface == at->ifa_name) {
          char text[INET_ADDRSTRLEN] = {};
          inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(at->ifa_addr)->sin_addr, text, sizeof(text));
          found = text;
        }
      freeifaddrs(all);
    }
    if (!found.empty()) return found;
  }
  if (is_loopback(master_addr)) return "127.0.0.1";
  char host[256] = {};
  return gethostname(host, sizeof(host) - 1) == 0 ? host : "an unknown host";
}

}  // namespace

DistributedEnv DistributedEnv::from_environment() {
  DistributedEnv env;
  env.world_size = env_int("WORLD_SIZE", 1, 1);
  env.rank = env_int("RANK", 0, 0);
  env.local_rank = env_int("LOCAL_RANK", env.rank, 0);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) env.master_addr = addr;
  env.master_port = env_int("MASTER_PORT", 29500, 1);
  if (env.master_port > 65535) fail("environment variable MASTER_PORT=", env.master_port, " is not a port");
  if (env.rank >= env.world_size) fail("RANK=", env.rank, " but WORLD_SIZE=", env.world_size);
  if (env.distributed() && (!std::getenv("MASTER_ADDR") || !std::getenv("MASTER_PORT")))
    fail("WORLD_SIZE=", env.world_size, " needs MASTER_ADDR and MASTER_PORT (as torchrun sets them)");
  return env;
}

// LibTorch 2 turned the Gloo and NCCL process groups into backends behind a
// generic ProcessGroup; their collectives are the same.
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Collectives> group;
  std::string peers;  ///< "rank 1 at 10.0.0.2, ...": who a failed collective was waiting for
};

namespace {

// Runs one collective, turning c10d's failures (a peer that died, a
// timeout) into an error that says which rank and which operation.
template <typename Make>
void run(const char* what, int rank, const std::string& peers, Make&& make) {
  try {
    make()->wait();
  } catch (const std::exception& e) {
    fail("distributed ", what, " failed on rank ", rank, ": ", e.what(), " (", peers, ": stopped or cannot be reached)");
  }
}

}  // namespace

ProcessGroup::ProcessGroup(const DistributedEnv& env, c10::Device device, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), world_size_(env.world_size) {
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0;
    options.numWorkers = static_cast<size_t>(env.world_size);
    options.waitWorkers = true;
    options.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " could not join the run at ", env.master_addr, ":", env.master_port, " (", e.what(),
         ")");
  }
  try {
#ifdef USE_C10D_NCCL
    if (device.is_cuda()) {
      publish_address(own_address("", env.master_addr));
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, rank_, world_size_, options);
      return;
    }
#endif
    if (device.is_cuda())
      fail("--device cuda with several processes needs a LibTorch built with NCCL (USE_C10D_NCCL)");
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    publish_address(own_address(interface ? interface : "", env.master_addr));
    if (interface && *interface)
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    else if (is_loopback(env.master_addr))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, rank_, world_size_, options);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " could not set up the process group (", e.what(), ")");
  }
}

// Every rank writes its address into the store and reads the others' now,
// while the store is reachable: after a failure it may not be.
void ProcessGroup::publish_address(const std::string& address) {
  const auto key = [](int rank) { return "albef/address/" + std::to_string(rank); };
  impl_->store->set(key(rank_), std::vector<uint8_t>(address.begin(), address.end()));
  for (int rank = 0; rank < world_size_; ++rank) {
    if (rank == rank_) continue;
    const std::vector<uint8_t> peer = impl_->store->get(key(rank));
    impl_->peers += str_cat(impl_->peers.empty() ? "" : ", ", "rank ", rank, " at ", std::string(peer.begin(), peer.end()));
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::average(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<at::Tensor> bucket;
  int64_t bytes = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<at::Tensor> flat;
    for (const auto& t : bucket) flat.push_back(t.reshape({-1}).to(at::kFloat));
    std::vector<at::Tensor> buffer = {at::cat(flat)};
    run("all_reduce", rank_, impl_->peers, [&] { return impl_->group->allreduce(buffer); });
    buffer[0].div_(world_size_);
    int64_t offset = 0;
    for (auto& t : bucket) {
      t.copy_(buffer[0].slice(0, offset, offset + t.numel()).view(t.sizes()));
      offset += t.numel();
    }
    bucket.clear();
    bytes = 0;
  };
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    bucket.push_back(t);
    bytes += t.numel() * 4;
    if (bytes >= bucket_bytes) flush();
  }
  flush();
}

void ProcessGroup::sum(at::Tensor& tensor) {
  // Gloo reduces float32/float64/integers, not bfloat16.
  const bool convert = tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf;
  std::vector<at::Tensor> buffer = {convert ? tensor.to(at::kFloat) : tensor.contiguous()};
  run("all_reduce", rank_, impl_->peers, [&] { return impl_->group->allreduce(buffer); });
  if (!buffer[0].is_same(tensor)) tensor.copy_(buffer[0]);
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& tensor) {
  const bool convert = tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf;
  std::vector<at::Tensor> input = {convert ? tensor.to(at::kFloat) : tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < world_size_; ++r) output[0].push_back(at::empty_like(input[0]));
  run("all_gather", rank_, impl_->peers, [&] { return impl_->group->allgather(output, input); });
  return at::cat(output[0]).to(tensor.scalar_type());
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) {
    std::vector<at::Tensor> buffer = {t.is_contiguous() ? t : t.contiguous()};
    run("broadcast", rank_, impl_->peers, [&] { return impl_->group->broadcast(buffer); });
    if (!buffer[0].is_same(t)) t.copy_(buffer[0]);
  }
}

void ProcessGroup::barrier() {
  run("barrier", rank_, impl_->peers, [&] { return impl_->group->barrier(); });
}

std::unique_ptr<ProcessGroup> join_process_group(c10::Device device, std::chrono::milliseconds timeout) {
  const DistributedEnv env = DistributedEnv::from_environment();
  if (!env.distributed()) return nullptr;
  return std::make_unique<ProcessGroup>(env, device, timeout);
}

}  // namespace albef::distributed
