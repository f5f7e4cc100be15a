// Service::stop() from another thread (SIGTERM in `albef serve`) is never lost,
// however it falls against run() binding and listening.

#include "server/service.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

namespace {

using albef::testing::data_path;

albef::server::ServeOptions tiny_options() {
  albef::server::ServeOptions options;
  options.config = data_path("tiny/Pretrain.yaml");
  options.checkpoint = data_path("tiny/albef_pretrain_tiny.pth");
  options.port = 0;
  options.threads = 1;
  options.http_threads = 2;
  return options;
}

// Whether run() ended after the stop; one that ignored it is listening by then,
// so a second stop ends it and the test fails instead of hanging.
bool ends(std::future<void>& run, albef::server::Service& service) {
  if (run.wait_for(std::chrono::seconds(30)) == std::future_status::ready) return true;
  service.stop();
  run.wait();
  return false;
}

TEST(ServeStop, AStopBeforeRunEndsItWithoutListening) {
  albef::server::Service service(tiny_options());
  service.stop();  // as when SIGTERM came while the model loaded
  bool listened = false;
  auto run = std::async(std::launch::async, [&] { service.run([&](int) { listened = true; }); });
  EXPECT_TRUE(ends(run, service)) << "run() ignored the stop";
  EXPECT_FALSE(listened);
}

TEST(ServeStop, AStopRacingRunAlwaysEndsIt) {
  // Each round lets the stop land somewhere else: before run(), while it
  // binds, between binding and listening, or while it listens.
  for (int round = 0; round < 20; ++round) {
    albef::server::Service service(tiny_options());
    auto run = std::async(std::launch::async, [&] { service.run([](int) {}); });
    std::this_thread::sleep_for(std::chrono::microseconds(250 * round));
    service.stop();
    ASSERT_TRUE(ends(run, service)) << "round " << round << ": run() ignored the stop";
  }
}

}  // namespace
