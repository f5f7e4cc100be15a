#pragma once
// Ordered parallel batch assembly shared by the train and eval loaders:
// worker threads load samples ("slots") in order of their slot number, the
// worker completing a batch assembles it, and the consumer receives batches
// strictly in order, so the result never depends on thread timing.

#include "albef/core/error.h"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace albef::data::detail {

template <typename Sample, typename Batch>
class BatchPipeline {
 public:
  /// Loads one slot; called concurrently from the workers.
  using Load = std::function<Sample(int64_t slot)>;
  /// Builds batch `batch` from its samples (in slot order); called once per
  /// batch, on a worker.
  using Assemble = std::function<Batch(std::vector<Sample>& samples, int64_t batch)>;

  /// Starts `num_workers` threads; they may work on the `prefetch_batches`
  /// batches following the last one handed out.
  BatchPipeline(int num_workers, int prefetch_batches) : prefetch_(prefetch_batches) {
    ALBEF_CHECK(num_workers > 0, "need at least one worker thread, got ", num_workers);
    ALBEF_CHECK(prefetch_batches > 0, "need at least one batch of prefetch, got ", prefetch_batches);
    workers_.reserve(static_cast<size_t>(num_workers));
    for (int i = 0; i < num_workers; ++i) workers_.emplace_back([this] { work(); });
  }

  /// Joins the workers, letting each finish the sample it is loading.
  ~BatchPipeline() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  /// Abandons the current job and starts one: batch b holds slots [b *
  /// batch_size, min((b + 1) * batch_size, num_slots)); batches before
  /// `first_batch` are neither loaded nor handed out. Samples still being
  /// loaded for the old job are discarded when they complete.
  void start(int64_t num_slots, int64_t batch_size, int64_t first_batch, Load load, Assemble assemble) {
    ALBEF_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
    auto job = std::make_shared<Job>();
    job->num_slots = num_slots;
    job->batch_size = batch_size;
    job->end_batch = (num_slots + batch_size - 1) / batch_size;
    ALBEF_CHECK(first_batch >= 0 && first_batch <= job->end_batch, "first batch ", first_batch,
                " out of range [0, ", job->end_batch, "]");
    job->next_slot = first_batch * batch_size;
    job->delivered = first_batch;
    job->load = std::move(load);
    job->assemble = std::move(assemble);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = std::move(job);
    }
    work_cv_.notify_all();
  }

  /// The next batch in order, waiting for it; nullopt once the job is done.
  /// Rethrows the first exception of a worker's Load or Assemble (and keeps
  /// rethrowing it until the next start()).
  std::optional<Batch> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    ALBEF_CHECK(job_ != nullptr, "no job started");
    const std::shared_ptr<Job> job = job_;
    if (job->error) std::rethrow_exception(job->error);
    if (job->delivered >= job->end_batch) return std::nullopt;
    auto it = job->pending.end();
    ready_cv_.wait(lock, [&] {
      it = job->pending.find(job->delivered);
      return job->error || (it != job->pending.end() && it->second.assembled);
    });
    if (job->error) std::rethrow_exception(job->error);
    std::optional<Batch> batch(std::move(it->second.batch));
    job->pending.erase(it);
    ++job->delivered;
    lock.unlock();
    work_cv_.notify_all();  // the prefetch window moved
    return batch;
  }

 private:
  struct Pending {
    std::vector<Sample> samples;
    int64_t remaining = 0;
    bool assembled = false;
    Batch batch{};
  };

  struct Job {
    int64_t num_slots = 0, batch_size = 1, end_batch = 0;
    Load load;
    Assemble assemble;
    int64_t next_slot = 0;  // the next slot to give a worker
    int64_t delivered = 0;  // the next batch to give the consumer
    std::map<int64_t, Pending> pending;  // node-based: references survive unlocking
    std::exception_ptr error;
  };

  bool has_work() const {
    return job_ && !job_->error && job_->next_slot < job_->num_slots &&
           job_->next_slot / job_->batch_size < job_->delivered + prefetch_;
  }

  void fail_job(Job& job, std::exception_ptr error) {
    if (!job.error) job.error = std::move(error);
    ready_cv_.notify_all();
  }

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_cv_.wait(lock, [&] { return stopping_ || has_work(); });
      if (stopping_) return;
      const std::shared_ptr<Job> job = job_;
      const int64_t slot = job->next_slot++;
      const int64_t b = slot / job->batch_size;
      Pending& pending = job->pending[b];
      if (pending.samples.empty()) {
        const int64_t size = std::min(job->batch_size, job->num_slots - b * job->batch_size);
        pending.samples.resize(static_cast<size_t>(size));
        pending.remaining = size;
      }
      lock.unlock();
      std::optional<Sample> sample;
      std::exception_ptr error;
      try {
        sample.emplace(job->load(slot));
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (job != job_) continue;  // abandoned by start()
      if (error) {
        fail_job(*job, error);
        continue;
      }
      pending.samples[static_cast<size_t>(slot - b * job->batch_size)] = std::move(*sample);
      if (--pending.remaining > 0) continue;
      // This worker completed the batch: assemble it outside the lock (no one
      // else touches a batch whose samples are all in).
      lock.unlock();
      std::optional<Batch> batch;
      try {
        batch.emplace(job->assemble(pending.samples, b));
      } catch (...) {
        error = std::current_exception();
      }
      pending.samples.clear();
      lock.lock();
      if (error) {
        fail_job(*job, error);
        continue;
      }
      pending.batch = std::move(*batch);
      pending.assembled = true;
      ready_cv_.notify_all();
    }
  }

  const int prefetch_;
  std::mutex mutex_;
  std::condition_variable work_cv_;   // workers: work or stop
  std::condition_variable ready_cv_;  // consumer: a batch is ready or a job failed
  std::shared_ptr<Job> job_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // last: started once the rest is initialised
};

}  // namespace albef::data::detail
