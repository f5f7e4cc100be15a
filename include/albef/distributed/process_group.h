#pragma once
/// @file process_group.h
/// @brief Data-parallel training over processes and machines with LibTorch's
/// c10d, the engine torch.distributed runs on: a TCPStore rendezvous at
/// MASTER_ADDR:MASTER_PORT and ProcessGroupGloo on CPU (ProcessGroupNCCL for
/// CUDA tensors when LibTorch is built with it).
///
/// Configured as torchrun configures the official scripts: RANK,
/// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment
/// (`albef launch` sets them for processes on one machine).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace albef::distributed {

/// This process's place in a run, from the torchrun variables.
struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  /// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; without
  /// WORLD_SIZE (or with 1) the run is single-process. Malformed values are
  /// an error naming the variable.
  static DistributedEnv from_environment();
  bool distributed() const { return world_size > 1; }
};

/// Collectives of one run. Every call blocks until done, and fails with an
/// albef::Error (naming the operation and the rank) when a peer is gone or
/// does not answer within the timeout, so that no rank hangs.
class ProcessGroup {
 public:
  /// Joins the run: rank 0 hosts the TCPStore, every rank connects to it
  /// (waiting up to `timeout` for the others) and builds a Gloo group (NCCL
  /// for a CUDA `device` when available).
  ProcessGroup(const DistributedEnv& env, c10::Device device, std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  /// Averages `tensors` (gradients) over the ranks in place: flattened into
  /// buckets of about `bucket_bytes`, each all-reduced in float32 (Gloo has
  /// no bfloat16 reduction), then divided by the world size.
  void average(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);
  /// Sums `tensor` over the ranks in place (bfloat16 and half in float32).
  void sum(at::Tensor& tensor);
  /// Every rank's `tensor` concatenated along dim 0 in rank order (the
  /// official concat_all_gather); all ranks must pass the same shape.
  at::Tensor all_gather(const at::Tensor& tensor);
  /// Copies rank 0's `tensors` into every rank's, in place.
  void broadcast(const std::vector<at::Tensor>& tensors);
  /// Waits for every rank.
  void barrier();

 private:
  void publish_address(const std::string& address);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
};

/// The process group of a run started by torchrun or `albef launch`
/// (DistributedEnv::from_environment), or null on one process.
std::unique_ptr<ProcessGroup> join_process_group(c10::Device device, std::chrono::milliseconds timeout);

}  // namespace albef::distributed
