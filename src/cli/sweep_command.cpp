// moeflow sweep MODEL --grid KEY=V1,V2,... [--grid ...] [--run flow|sgd|both] [-o OUT]: a grid of runs.
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <tuple>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/sweep_output.hpp"
#include "moeflow/sweep/sweep.hpp"

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("grid,g", po::value<std::vector<std::string>>()->composing(),
       "an axis of the grid: a model key and its values, e.g. --grid d=100,1000 (repeatable; the grid is "
       "the product of the axes)")
      ("run", po::value<std::string>()->default_value("flow"), "what runs at each point: flow (the ODE), sgd, or both")
      ("seeds", po::value<int>()->default_value(1), "SGD seeds per point: seed, seed+1, ... (model key `seed`)")
      ("threads,j", po::value<int>()->default_value(0), "threads (0: one per core); results do not depend on it")
      ("shard", po::value<std::string>(),
       "I/N: run only the I-th of N interleaved shares of the missing points (grid index i with i mod N = I-1), "
       "for N machines; merge the machines' OUT.parts/ folders and run once more without --shard")
      ("output,o", po::value<std::string>(), "HDF5 file to write (default: <model name>_sweep.h5 in the current folder)")
      ("set,s", po::value<std::vector<std::string>>()->composing(),
       "override a model key at every point, e.g. --set integrate.t_end=100; KEY= (empty) removes it "
       "(repeatable)")
      ("quiet,q", "print nothing but errors")
      ("dry-run,n", "check every point's model (and its [sgd] options when SGD runs) and list the points: to run, "
       "done earlier, or failing with the message; run nothing, write nothing (exit 2 if a point fails)");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow sweep MODEL --grid KEY=V1,V2,... [--grid ...] [--run flow|sgd|both]\n"
               "                     [--seeds S] [--threads T] [--shard I/N] [--set KEY=VALUE ...] [-o OUT]\n"
               "                     [--dry-run]\n\n"
               "Runs MODEL at every point of a grid of model-key values (the product of the --grid axes,\n"
               "the first axis varying slowest): the population ODE (--run flow), SGD over seeds\n"
               "(--run sgd) or both. Points run in parallel; each finished point is saved at once in\n"
               "OUT.parts/ (one file per point, written atomically). A point that fails (a bad value,\n"
               "an error) or ends abnormally (diverged, NaN, ...) is recorded with its message and the\n"
               "sweep goes on. At the end one file OUT holds the table (grid values, status, final\n"
               "risks, event times) and every point's trajectories, and OUT.parts/ is removed.\n\n"
               "Resuming: a killed or interrupted sweep resumes when the same command is run again:\n"
               "points already in OUT.parts/ or in an existing OUT whose model text, overrides, run\n"
               "and seeds are unchanged are taken as they are, and only the others run. Parts computed\n"
               "elsewhere (another machine) merge the same way: copy them into OUT.parts/ first.\n\n"
               "Many machines: run the same command with --shard 1/N on the first, --shard 2/N on the\n"
               "second, ...; each runs its share of the points and keeps them in its OUT.parts/ (OUT is\n"
               "written only once every point is there). Copy every OUT.parts/ into one, then run the\n"
               "command without --shard: it takes every point and writes OUT. The results do not\n"
               "depend on how the points were split.\n\n"
            << Options() << "\n"
            << "Values are separated by commas outside parentheses, so --grid student.link=erf,hermite(0,0,1)\n"
               "has two values. Table columns (/table in OUT, and printed): index, one per grid key,\n"
               "status, flow_final_risk, flow_t_final, flow_event_<e>, sgd_final_risk (median over\n"
               "seeds), sgd_final_train_risk, sgd_final_test_risk (when recorded), sgd_event_<e>.\n"
               "`moeflow plot OUT` draws the final risk against the first grid key, one line per\n"
               "value of the second, with each line's minimum marked.\n\n"
               "Exit status: 0 done, 1 error, 2 bad input (or every point failed on it), 3 some point\n"
               "failed or ended abnormally (the file is still written), 130 interrupted (the finished\n"
               "points are kept in OUT.parts/; run the same command to resume).\n";
}

// --dry-run: every point checked, listed in grid order; nothing run or written.
int DryRun(const io::ModelFile& model, const std::vector<GridAxis>& axes, const SweepOptions& options) {
  const SweepResult result = RunSweep(model, axes, options);
  std::size_t to_run = 0, failing = 0;
  for (const SweepPointResult& p : result.points) {
    std::cout << "  [" << p.index + 1 << "/" << result.total << "] " << p.point.Label() << ": ";
    if (p.reused) {
      std::cout << "done earlier (" << ToString(p.status) << ")\n";
    } else if (p.status == PointStatus::kError) {
      std::cout << "fails: " << p.message << "\n";
      ++failing;
    } else {
      std::cout << "to run\n";
      ++to_run;
    }
  }
  std::cout << result.total << (result.total == 1 ? " point: " : " points: ") << to_run << " to run, "
            << result.Reused() << " done earlier, " << failing << " failing";
  if (result.other_shards > 0) std::cout << ", " << result.other_shards << " left to the other shards";
  std::cout << ". Dry run: nothing run, nothing written.\n";
  return failing > 0 ? kExitInputError : kExitOk;
}

int RunSweepCli(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "model", "sweep");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  const io::ModelFile model = LoadModel(vm, "sweep");
  if (!vm.count("grid")) throw InputError("sweep: give at least one --grid KEY=V1,V2,... (see moeflow sweep --help)");
  std::vector<GridAxis> axes;
  for (const std::string& spec : vm["grid"].as<std::vector<std::string>>()) axes.push_back(ParseGridAxis(spec));
  const std::string model_path = vm["model"].as<std::string>();
  const std::string output = OutputPath(vm, "_sweep");
  const bool quiet = vm.count("quiet") > 0;

  SweepOptions options;
  options.run = ParseSweepRun(vm["run"].as<std::string>());
  options.seeds = vm["seeds"].as<int>();
  options.threads = ResolveThreads(vm);
  options.parts_dir = output + ".parts";
  options.previous_files = {output};
  options.command_line = CommandLine("sweep", args);
  options.interrupt = InstallInterruptHandler();
  if (vm.count("shard")) std::tie(options.shard, options.shards) = ParseShard("--shard", vm["shard"].as<std::string>());
  options.dry_run = vm.count("dry-run") > 0;
  if (options.dry_run) return DryRun(model, axes, options);
  const bool progress = ShowProgress(quiet);
  const SweepResult result = RunSweep(model, axes, options, [progress](const SweepPointResult& p, std::size_t done,
                                                                      std::size_t total) {
    if (!progress) return;
    std::fprintf(stderr, "  [%zu/%zu] %s: %s%s\n", done, total, p.point.Label().c_str(), ToString(p.status),
                 p.reused ? " (earlier run)" : "");
    std::fflush(stderr);
  });
  if (result.interrupted) {
    std::cerr << "moeflow sweep: interrupted; " << result.points.size() << " of " << result.total
              << " points are saved in " << options.parts_dir << "/: run the same command to resume\n";
    return kExitInterrupted;
  }
  std::size_t errors = 0, abnormal = 0;
  for (const SweepPointResult& p : result.points) {
    errors += p.status == PointStatus::kError ? 1 : 0;
    abnormal += p.status == PointStatus::kAbnormal ? 1 : 0;
  }
  if (result.other_shards > 0) {
    if (!quiet) {
      std::cout << "shard " << options.shard + 1 << "/" << options.shards << ": " << result.points.size() << " of "
                << result.total << " points finished (" << errors << " failed, " << abnormal
                << " abnormal), saved in " << options.parts_dir << "/; " << result.other_shards
                << " point(s) left to the other shards.\nTo merge: copy every shard's " << options.parts_dir
                << "/ files into one " << options.parts_dir << "/ and run the command without --shard.\n";
    }
    return errors + abnormal > 0 ? kExitOutcome : kExitOk;
  }
  io::WriteFileAtomically(output, io::SweepResultFile(model, axes, options, result));
  std::filesystem::remove_all(options.parts_dir);
  if (!quiet) std::cout << "model:    " << model_path << "\n" << io::SweepReport(axes, result) << "written:  " << output << "\n";
  if (errors == result.total) {
    std::cerr << "moeflow sweep: every point failed, e.g. " << result.points.front().point.Label() << ": "
              << result.points.front().message << "\n";
    return kExitInputError;
  }
  if (errors + abnormal > 0) {
    std::cerr << "moeflow sweep: " << errors << " point(s) failed and " << abnormal << " ended abnormally\n";
    return kExitOutcome;
  }
  return kExitOk;
}

}  // namespace

int RunSweepCommand(const Args& args) { return RunSweepCli(args); }

}  // namespace moeflow::cli
