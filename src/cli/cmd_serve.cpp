// albef serve: the HTTP service (src/server/) until SIGTERM or SIGINT, which
// stop accepting, answer the requests in flight, and exit 0.

#include "cli/common.h"

#include "server/service.h"

#include <pthread.h>
#include <signal.h>

#include <iostream>
#include <memory>
#include <thread>

namespace albef::cli {
namespace {

void run_serve(const server::ServeOptions& options) {
  // Only the watcher thread takes the signals: every thread started below
  // inherits this mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  server::Service service(options);
  std::thread watcher([&service, stop_signals] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::cerr << "albef serve: " << (signal == SIGTERM ? "SIGTERM" : "SIGINT")
              << ": answering the requests in flight, then exiting\n";
    service.stop();
  });
  service.run([&options](int port) {
    std::cout << "albef serve: listening on http://" << options.host << ":" << port << "/" << std::endl;
  });
  watcher.detach();  // blocked in sigwait when run() ended some other way; the process exits next
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto options = std::make_shared<server::ServeOptions>();
  CLI::App* command = app.add_subcommand(
      "serve", "An HTTP service and web page: embeddings, scores, gallery search, VQA and Grad-CAM heat maps, "
               "batched across clients");
  command->add_option("--config", options->config, "The model's config (Retrieval_*.yaml, Pretrain.yaml)")->required();
  command->add_option("--checkpoint", options->checkpoint, "Its checkpoint (retrieval, pretraining, LAVIS)")->required();
  tasks::add_text_encoder_flag(*command, options->text_encoder);
  command->add_option("--index", options->index, "An `albef index` gallery for /v1/search");
  command->add_option("--vqa_checkpoint", options->vqa_checkpoint, "A VQA checkpoint for /v1/vqa");
  command->add_option("--vqa_config", options->vqa_config, "The VQA model's config (default: --config)");
  command->add_option("--host", options->host, "Address to listen on (127.0.0.1: this machine only)");
  command->add_option("--port", options->port, "Port (0: any free one, printed)")->check(CLI::Range(0, 65535));
  command->add_option("--api_key_file", options->api_key_file,
                      "A file holding the key every request but /health and / must send as 'Authorization: Bearer'");
  command->add_option("--threads", options->threads, "Compute threads (0 = every core)")->check(CLI::NonNegativeNumber);
  command->add_option("--precision", options->precision, "fp32, bf16 or int8 (Grad-CAM needs fp32 or bf16)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  command->add_option("--device", options->device, "cpu or cuda[:N]");
  command->add_option("--max_batch", options->max_batch, "Items in one forward pass")->check(CLI::Range(1, 1024));
  command->add_option("--max_wait_ms", options->max_wait_ms, "How long a request waits for others to batch with")
      ->check(CLI::Range(0, 10000));
  command->add_option("--max_queue", options->max_queue, "Requests queued or running; more get 503 at once")
      ->check(CLI::PositiveNumber);
  command->add_option("--max_body_bytes", options->max_body_bytes, "Largest request body")->check(CLI::PositiveNumber);
  command->add_option("--max_pixels", options->max_pixels, "Largest image, width x height")->check(CLI::PositiveNumber);
  command->add_option("--max_text_chars", options->max_text_chars, "Largest caption, query or question, in bytes")
      ->check(CLI::PositiveNumber);
  command->add_option("--max_items", options->max_items, "Most texts, images or pairs in one request")
      ->check(CLI::PositiveNumber);
  command->add_option("--http_threads", options->http_threads, "Connections served at once")->check(CLI::PositiveNumber);
  command->add_option("--gradcam_block", options->gradcam_block,
                      "The fusion layer Grad-CAM reads (default: fusion_layer + 2, Grounding.py's 8)");
  command->callback([options] { run_serve(*options); });
}

}  // namespace albef::cli
