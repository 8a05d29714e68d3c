// moeflow flow MODEL [-o OUT] [--set KEY=VALUE ...]: integrate a model's population gradient flow.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/flow_output.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("output,o", po::value<std::string>(), "HDF5 file to write (default: <model name>.h5 in the current folder)")
      ("set,s", po::value<std::vector<std::string>>()->composing(),
       "override a model key, e.g. --set d=1e6 --set integrate.stepper=fehlberg78; KEY= (empty) removes it "
       "(repeatable)")
      ("quiet,q", "print nothing but errors")
      ("dry-run,n", "check MODEL and print it resolved (every key the run reads, defaults included: a model "
       "file that reproduces the run) with the size of its state; integrate nothing, write nothing");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow flow MODEL [-o OUT] [--set KEY=VALUE ...] [--dry-run]\n\n"
               "Integrates the population gradient flow of MODEL (an INI model file, see models/)\n"
               "as an ODE over the Gram matrix of the model's vectors, with an adaptive Boost.Odeint\n"
               "stepper, locates the model's events, writes the trajectory to an HDF5 file (written\n"
               "atomically: a failed run leaves no file and never touches an existing one) and prints\n"
               "a summary. OUT's folder is checked before the run; if OUT still cannot be written when\n"
               "the run ends (folder removed, disk full), the result goes to $TMPDIR (else /tmp) and the\n"
               "error says where.\n\n"
            << Options() << "\n"
            << "Integration keys ([integrate] section): stepper (";
  for (const std::string& s : StepperNames()) std::cout << s << (s == StepperNames().back() ? "" : ", ");
  std::cout << "),\n  abs_tol, rel_tol, t_end, dt_initial, dt_min, max_steps, divergence.\n"
               "Output keys ([output]): grid (log|linear), points, t_first, every_step.\n"
               "Events ([event.NAME]): observable, op (>=, >, <=, <), threshold, relative (threshold times the\n  observable at t = 0), stop.\n\n"
               "Links (student.link, teacher.link):\n";
  for (const std::string& l : KnownLinks()) std::cout << "  " << l << "\n";
  std::cout << "\nExit status: 0 done, 1 error, 2 bad input, 3 the run ended abnormally (diverged,\n"
               "NaN, step-size underflow, max_steps; the file is still written), 130 interrupted.\n";
}

int RunFlow(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "model", "flow");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  const io::ModelFile model = LoadModel(vm, "flow");
  const std::string model_path = vm["model"].as<std::string>();
  if (vm.count("dry-run")) {
    PrintResolvedModel("flow", model_path, model, BuildFlow(model));
    return kExitOk;
  }
  const std::string output = OutputPath(vm);
  const bool quiet = vm.count("quiet") > 0;
  const FlowSetup setup = BuildFlow(model);

  IntegrationControl control;
  control.interrupt = InstallInterruptHandler();
  const bool show_progress = ShowProgress(quiet);
  if (show_progress) {
    control.progress = [](double t, double t_end) {
      std::fprintf(stderr, "\r  t = %.4g of %.4g", t, t_end);
      std::fflush(stderr);
    };
  }
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  const RunSummary summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events,
                                         setup.stages, &trajectory, &stages, control);
  if (show_progress) std::fprintf(stderr, "\r%40s\r", "");
  if (summary.termination == Termination::kInterrupted) {
    std::cerr << "moeflow flow: interrupted at t = " << summary.t_final << "; nothing written\n";
    return kExitInterrupted;
  }
  io::WriteFileAtomically(output, io::FlowResultFile(model, setup, summary, trajectory, stages, CommandLine("flow", args)));
  if (!quiet) {
    std::cout << "model:          " << model_path << "\n"
              << io::FlowReport(setup, summary, trajectory, stages) << "written:        " << output << "\n";
  }
  if (!summary.Ok()) {
    std::cerr << "moeflow flow: the run ended abnormally: " << summary.message << "\n";
    return kExitOutcome;
  }
  return kExitOk;
}

}  // namespace

int RunFlowCommand(const Args& args) { return RunFlow(args); }

}  // namespace moeflow::cli
