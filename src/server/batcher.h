#pragma once
// Dynamic batching: requests of one kind (text embedding, scoring, ...) wait
// in a queue; a collector thread gathers them into one forward pass of up to
// `max_batch` items, waiting at most `max_wait` after the first arrived. The
// passes of every kind run one at a time under one lock, so the model's
// compute threads (sized to the cores) are never oversubscribed.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace albef::server {

/// The server is full: the client should come back later (HTTP 503).
struct Overloaded : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Requests queued or running across every kind, against a bound.
class Load {
 public:
  explicit Load(int64_t max_requests) : max_(max_requests) {}
  /// Counts one more request, or throws Overloaded when at the bound.
  void enter() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (count_ >= max_) throw Overloaded("the server is at its queue limit (--max_queue " + std::to_string(max_) + ")");
    ++count_;
  }
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    --count_;
  }
  int64_t count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  mutable std::mutex mutex_;
  int64_t count_ = 0;
  const int64_t max_;
};

template <typename Item, typename Result>
class Batcher {
 public:
  /// Runs one batch: a result per item, in order.
  using Run = std::function<std::vector<Result>(const std::vector<Item>& items)>;
  /// Called with the item count of every batch run (metrics).
  using Observe = std::function<void(size_t items)>;

  Batcher(Run run, size_t max_batch, std::chrono::microseconds max_wait, std::mutex& compute, Load& load,
          Observe observe)
      : run_(std::move(run)), max_batch_(max_batch), max_wait_(max_wait), compute_(compute), load_(load),
        observe_(std::move(observe)), collector_([this] { collect(); }) {}

  ~Batcher() { stop(); }

  /// Queues `items` as one request and waits for their results. Throws
  /// Overloaded at once when the server is full, or what the batch threw.
  std::vector<Result> submit(std::vector<Item> items) {
    load_.enter();
    std::future<std::vector<Result>> done;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(Job{std::move(items), {}, std::chrono::steady_clock::now()});
      done = jobs_.back().promise.get_future();
    }
    ready_.notify_one();
    struct Leave {
      Load& load;
      ~Leave() { load.leave(); }
    } leave{load_};
    return done.get();
  }

  /// Runs what is queued, then stops the collector.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    if (collector_.joinable()) collector_.join();
  }

 private:
  struct Job {
    std::vector<Item> items;
    std::promise<std::vector<Result>> promise;
    std::chrono::steady_clock::time_point arrived;
  };

  void collect() {
    while (true) {
      std::vector<Job> batch;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping with nothing left
        // Wait for more work until the batch is full or the oldest request has waited max_wait.
        const auto deadline = jobs_.front().arrived + max_wait_;
        ready_.wait_until(lock, deadline, [this] { return stopping_ || queued_items() >= max_batch_; });
        size_t items = 0;
        while (!jobs_.empty() && (batch.empty() || items + jobs_.front().items.size() <= max_batch_)) {
          items += jobs_.front().items.size();
          batch.push_back(std::move(jobs_.front()));
          jobs_.pop_front();
        }
      }
      run_batch(batch);
    }
  }

  size_t queued_items() const {
    size_t items = 0;
    for (const Job& job : jobs_) items += job.items.size();
    return items;
  }

  void run_batch(std::vector<Job>& batch) {
    std::vector<Item> items;
    for (Job& job : batch)
      for (Item& item : job.items) items.push_back(std::move(item));
    try {
      std::vector<Result> results;
      {
        std::lock_guard<std::mutex> compute(compute_);
        results = run_(items);
      }
      if (observe_) observe_(items.size());
      if (results.size() != items.size()) throw std::logic_error("a batch returned the wrong number of results");
      size_t next = 0;
      for (Job& job : batch) {
        const size_t count = job.items.size();
        job.promise.set_value(std::vector<Result>(std::make_move_iterator(results.begin() + next),
                                                  std::make_move_iterator(results.begin() + next + count)));
        next += count;
      }
    } catch (...) {
      for (Job& job : batch) job.promise.set_exception(std::current_exception());
    }
  }

  Run run_;
  const size_t max_batch_;
  const std::chrono::microseconds max_wait_;
  std::mutex& compute_;
  Load& load_;
  Observe observe_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread collector_;  // last: starts once everything above exists
};

}  // namespace albef::server
