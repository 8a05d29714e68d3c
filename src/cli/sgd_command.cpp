// moeflow sgd MODEL [--set KEY=VALUE ...] [--seeds S] [--threads T] [-o OUT]: finite-d SGD.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/sgd_output.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/simulator.hpp"

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("output,o", po::value<std::string>(), "HDF5 file to write (default: <model name>_sgd.h5 in the current folder)")
      ("set,s", po::value<std::vector<std::string>>()->composing(),
       "override a model key, e.g. --set d=1000 --set sgd.lr=0.1; KEY= (empty) removes it (repeatable)")
      ("seeds", po::value<int>()->default_value(1), "number of seeds: seed, seed+1, ... (model key `seed`)")
      ("threads,j", po::value<int>()->default_value(0), "threads (0: one per core); results do not depend on it")
      ("quiet,q", "print nothing but errors")
      ("dry-run,n", "check MODEL and its [sgd] options and print it resolved (every key the run reads, defaults "
       "included: a model file that reproduces the run) with the size of its state; simulate nothing, write "
       "nothing");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow sgd MODEL [--set KEY=VALUE ...] [--seeds S] [--threads T] [-o OUT] [--dry-run]\n\n"
               "Runs SGD at finite d on MODEL (the same model file as `moeflow flow`): teacher vectors\n"
               "orthonormal, the student started from the same seeded initial overlaps as the ODE, the\n"
               "loss ½(f − y)² averaged over a batch, time t = η·steps. Records the model's observables\n"
               "(population risk exact from the overlaps), the student norms and the events on the\n"
               "model's output grid, one HDF5 group per seed, and prints each event's median time and\n"
               "interquartile range over the seeds.\n\n"
            << Options() << "\n"
            << "SGD keys ([sgd] section):\n"
               "  lr              η = lr · d^(-lr_exponent); for dynamics.kind = online_sgd the default\n"
               "                  is η = dynamics.lr / d (the η̃ of the ODE)\n"
               "  lr_exponent     default 0 (1 when lr comes from dynamics.lr)\n"
               "  batch           B (default dynamics.batch, else 1)\n"
               "  samples         0: online, a fresh batch per step; n: multi-pass over n fixed samples,\n"
               "                  reshuffled every epoch, train risk recorded\n"
               "  test_samples    an empirical test risk on this many fresh samples per record (0: off)\n"
               "  engine          vectors: the d-dimensional vectors; overlaps: the Gram matrix only,\n"
               "                  exact in law for online SGD and independent of d; auto (default):\n"
               "                  overlaps online, vectors multi-pass\n"
               "  event_resolution  events are checked at steps spaced by this fraction of t (1e-3)\n"
               "  max_steps       stop after this many steps (an outcome)\n"
               "The run ends at integrate.t_end or at an event with stop = true.\n\n"
               "Exit status: 0 done, 1 error, 2 bad input, 3 some seed ended abnormally (diverged,\n"
               "NaN, max_steps; the file is still written), 130 interrupted (nothing written).\n";
}

int RunSgd(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "model", "sgd");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  const io::ModelFile model = LoadModel(vm, "sgd");
  const std::string model_path = vm["model"].as<std::string>();
  if (vm.count("dry-run")) {
    const FlowSetup setup = BuildFlow(model);
    ValidateSgd(setup);
    PrintResolvedModel("sgd", model_path, model, setup);
    return kExitOk;
  }
  const std::string output = OutputPath(vm, "_sgd");
  const bool quiet = vm.count("quiet") > 0;
  const int seeds = vm["seeds"].as<int>();
  if (seeds < 1) ThrowBadValue("--seeds", std::to_string(seeds), "must be >= 1");
  const int threads = ResolveThreads(vm);

  const FlowSetup setup = BuildFlow(model);
  SgdControl control;
  control.interrupt = InstallInterruptHandler();
  if (ShowProgress(quiet)) control.progress = SgdProgressLine();
  const std::vector<SgdRun> runs = SimulateModelSgd(setup, seeds, threads, control);
  if (control.progress) ClearProgressLine();
  bool ok = true;
  for (const SgdRun& r : runs) {
    if (r.summary.termination == Termination::kInterrupted) {
      std::cerr << "moeflow sgd: interrupted; nothing written\n";
      return kExitInterrupted;
    }
    ok = ok && r.summary.Ok();
  }
  io::WriteFileAtomically(output, io::SgdResultFile(model, setup, runs, CommandLine("sgd", args)));
  if (!quiet) {
    std::cout << "model:          " << model_path << "\n" << io::SgdReport(setup, runs) << "written:        " << output << "\n";
  }
  if (!ok) {
    for (const SgdRun& r : runs) {
      if (!r.summary.Ok()) std::cerr << "moeflow sgd: seed " << r.seed << " ended abnormally: " << r.summary.message << "\n";
    }
    return kExitOutcome;
  }
  return kExitOk;
}

}  // namespace

int RunSgdCommand(const Args& args) { return RunSgd(args); }

}  // namespace moeflow::cli
