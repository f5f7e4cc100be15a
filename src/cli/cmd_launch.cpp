// albef launch: start N albef processes of one data-parallel run on this
// machine, with the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), and stop them all when one fails.

#include "cli/common.h"
#include "tasks/registry.h"

#include "albef/core/error.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <thread>

extern char** environ;

namespace albef::cli {
namespace {

struct LaunchFlags {
  int nproc = 2;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  int grace_seconds = 60;
  std::string task;                  ///< the command's name, or its official script's (Pretrain.py)
  std::vector<std::string> command;  ///< the command's flags
};

volatile sig_atomic_t g_stop_signal = 0;
void remember_signal(int signal) { g_stop_signal = signal; }

// A port nobody listens on now (the kernel's choice), for one-machine runs.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("launch: cannot open a socket to find a free port");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    fail("launch: cannot find a free port (", std::strerror(errno), ")");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int run_launch(const LaunchFlags& flags) {
  // Only the tasks train or evaluate data-parallel: anything else would just run N times.
  const tasks::Task* task = tasks::find_task(flags.task);
  if (!task || !task->data_parallel) {
    std::string names;
    for (const tasks::Task& each : tasks::registry())
      if (each.data_parallel) names += (names.empty() ? "" : ", ") + each.name;
    fail("launch: '", flags.task, "' is not a ", task ? "data-parallel " : "", "task; data-parallel runs take one of: ", names);
  }
  if (flags.node_rank >= flags.nnodes) fail("launch: --node_rank ", flags.node_rank, " with --nnodes ", flags.nnodes);
  if (flags.nnodes > 1 && flags.master_port == 0) fail("launch: several machines need an agreed --master_port");
  const int port = flags.master_port > 0 ? flags.master_port : free_port();
  const int world = flags.nnodes * flags.nproc;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(flags.nproc)));

  auto set_by_launch = [](const std::string& entry) {
    for (const char* name : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="})
      if (entry.rfind(name, 0) == 0) return true;
    return false;
  };
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e)
    if (!set_by_launch(*e)) base_env.push_back(*e);
  const bool has_threads = std::getenv("OMP_NUM_THREADS") != nullptr;

  ::signal(SIGINT, remember_signal);
  ::signal(SIGTERM, remember_signal);
  std::map<pid_t, int> rank_of;
  for (int local = 0; local < flags.nproc; ++local) {
    const int rank = flags.node_rank * flags.nproc + local;
    std::vector<std::string> env = base_env;
    env.push_back("RANK=" + std::to_string(rank));
    env.push_back("WORLD_SIZE=" + std::to_string(world));
    env.push_back("LOCAL_RANK=" + std::to_string(local));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(flags.nproc));
    env.push_back("MASTER_ADDR=" + flags.master_addr);
    env.push_back("MASTER_PORT=" + std::to_string(port));
    if (!has_threads) env.push_back("OMP_NUM_THREADS=" + threads);  // each process its share of the cores
    std::vector<std::string> args = {"albef", task->name};
    args.insert(args.end(), flags.command.begin(), flags.command.end());
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()) != 0)
      fail("launch: cannot start rank ", rank, " (", std::strerror(errno), ")");
    rank_of[pid] = rank;
  }

  int result = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  while (!rank_of.empty()) {
    if (g_stop_signal && !deadline) {
      for (const auto& [pid, rank] : rank_of) ::kill(pid, g_stop_signal);
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(flags.grace_seconds);
      result = 128 + g_stop_signal;
    }
    if (deadline && std::chrono::steady_clock::now() > *deadline) {
      for (const auto& [pid, rank] : rank_of) {
        std::cerr << "launch: rank " << rank << " did not stop within " << flags.grace_seconds << " s; killing it\n";
        ::kill(pid, SIGKILL);
      }
      deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    const int rank = rank_of[pid];
    rank_of.erase(pid);
    if (status == 0) continue;
    std::cerr << "launch: rank " << rank << " " << describe(status) << "\n";
    if (result == 0) result = exit_code(status);
    // The others notice the missing peer and stop with an error of their
    // own; whoever is still there after the grace period is killed.
    if (!deadline) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(flags.grace_seconds);
  }
  return result;
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto flags = std::make_shared<LaunchFlags>();
  CLI::App* command = app.add_subcommand(
      "launch", "Run a task data-parallel in several processes (as torchrun): albef launch --nproc 2 pretrain "
                "--config ... (or torch.distributed.launch's words: --nproc_per_node=2 --use_env Pretrain.py ...)");
  command->add_option("--nproc,--nproc_per_node", flags->nproc, "Processes on this machine")
      ->check(CLI::PositiveNumber);
  command->add_option("--nnodes", flags->nnodes, "Machines in the run")->check(CLI::PositiveNumber);
  command->add_option("--node_rank", flags->node_rank, "This machine's index (0 hosts the rendezvous)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--master_addr", flags->master_addr, "Address of machine 0 (the rendezvous)");
  command->add_option("--master_port", flags->master_port, "Rendezvous port (default: a free one, one machine only)")
      ->check(CLI::Range(0, 65535));
  command->add_option("--grace", flags->grace_seconds,
                      "Seconds the other processes get to stop after one fails, before they are killed")
      ->check(CLI::PositiveNumber);
  command->add_flag("--use_env", "Accepted for torch.distributed.launch's command lines (albef always passes the "
                                  "rank in the environment, as --use_env asks)");
  command->add_option("command", flags->task, "The task to run (pretrain, retrieval, ... or its script: Pretrain.py, ...), "
                                              "then its flags")
      ->required();
  // Everything after the task's name is its own: as torch.distributed.launch
  // reads `--nproc_per_node=8 --use_env Pretrain.py --config ...`.
  command->prefix_command();
  command->callback([flags, command] {
    flags->command = command->remaining();
    if (!flags->command.empty() && flags->command.front() == "--") flags->command.erase(flags->command.begin());
    const int code = run_launch(*flags);
    if (code != 0) std::exit(code);
  });
}

}  // namespace albef::cli
