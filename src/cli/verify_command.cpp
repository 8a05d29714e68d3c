// moeflow verify MODEL [--sgd] [-o OUT]: check a model file's claims ([check.NAME] sections).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/flow_output.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/verify/checks.hpp"

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("sgd", "also run the checks measured on SGD (slower)")
      ("threads,j", po::value<int>()->default_value(0), "threads for SGD seeds (0: one per core)")
      ("output,o", po::value<std::string>(), "HDF5 report (default: <model name>_verify.h5)")
      ("set,s", po::value<std::vector<std::string>>()->composing(), "override a model key; KEY= (empty) removes it (repeatable)")
      ("quiet,q", "print nothing but errors")
      ("dry-run,n", "check the model and the model of every run its checks make, and list the runs each check "
       "makes; run nothing, write nothing");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow verify MODEL [--sgd] [-o OUT] [--set KEY=VALUE ...] [--dry-run]\n\n"
               "Runs the model's population ODE (as moeflow flow does) and whatever its checks need,\n"
               "then prints one line per check (PASS, FAIL or SKIP) with the expected rule and the\n"
               "measured numbers, and writes the run and the report to HDF5. Checks are [check.NAME]\n"
               "sections of the model file:\n"
               "  kind = order    events = a, b, c        the events happen in this order\n"
               "  kind = before   first = A, second = B   T_A <= T_B (A[*], B[*]: pair by pair)\n"
               "  kind = scaling  event = E, exponent = x, tolerance = t, dimensions = d1, d2, ...\n"
               "                  log-log slope of T_E against d (verify runs the sweep); sgd = true\n"
               "                  measures SGD steps (median over `seeds`) and needs --sgd\n"
               "  kind = bound    observable = EXPR, constant = C, power = p, until = T\n"
               "                  |EXPR| <= C d^p for t <= T\n"
               "  kind = final    observable = EXPR, op = <=, threshold = v   at the end of the run\n"
               "  kind = argmin   observable = EXPR, key = K, values = v1, v2, ..., across = A,\n"
               "                  across_values = a1, a2, ..., interior = a_i, ...: the K minimising\n"
               "                  the final EXPR (a run per (K, A) point) is non-decreasing in A and\n"
               "                  strictly inside (v1, v_last) at the interior values; sgd = true:\n"
               "                  median over `seeds` SGD seeds, needs --sgd\n"
               "  set = KEY=VALUE, ...   any kind: the check is measured on runs of the model with\n"
               "                  these keys changed (e.g. set = d=200, sgd.samples=20000); order,\n"
               "                  before, bound and final checks with the same list share one run\n"
               "  seeds = N, at_least = F   order, before, bound, final: measured on the runs from\n"
               "                  the model's seed and the next N - 1; holds if it holds for at least\n"
               "                  the fraction F (default 1) of them\n"
               "  claim = TEXT    the claim in words (printed)\n"
               "A run that ends abnormally (diverged, not finite, step underflow, max_steps, invariant\n"
               "violated) is named beside the check that read it; final and argmin checks, and bound\n"
               "checks whose window it did not reach, then FAIL (no final value to judge).\n\n"
            << Options() << "\n"
            << "Exit status: 0 every check passed (skipped ones aside), 4 some check failed,\n"
               "1 error, 2 bad input, 130 interrupted (nothing written).\n";
}

// --dry-run: every run's model checked (PlanVerification), each check's runs listed.
int DryRun(const io::ModelFile& model, const std::string& model_path, bool sgd) {
  VerifyOptions options;
  options.sgd = sgd;
  const VerificationPlan plan = PlanVerification(model, options);
  std::cout << "model:   " << model_path << "\n";
  for (std::size_t i = 0; i < plan.checks.size(); ++i) {
    const CheckSpec& c = plan.checks[i];
    const auto& runs = plan.runs[i];
    std::cout << "  " << c.name << ": ";
    if (c.sgd && !sgd) std::cout << "skipped (needs --sgd); ";
    if (runs.empty()) {
      std::cout << "reads the model's run";
    } else {
      // Every run's assignments start with the check's `set`: shown once, then what varies.
      constexpr std::size_t kShown = 4;
      std::cout << runs.size() << (runs.size() == 1 ? " run" : " runs") << " of its own";
      if (!c.overrides.empty()) std::cout << ", set " << detail::Join(c.overrides, ", ");
      std::vector<std::string> varying;
      for (std::size_t r = 0; r < runs.size() && r < kShown; ++r) {
        const std::vector<std::string> rest(runs[r].begin() + static_cast<std::ptrdiff_t>(c.overrides.size()),
                                            runs[r].end());
        if (!rest.empty()) {
          varying.push_back(detail::Join(rest, ", "));
        } else if (runs.size() > 1) {
          varying.emplace_back("the model's seed");  // the first of several seeds, with the `set` alone
        }
      }
      if (!varying.empty()) std::cout << " (" << detail::Join(varying, "; ") << (runs.size() > kShown ? "; ...)" : ")");
      if (c.sgd) std::cout << ", SGD over " << c.seeds << " seeds each";
    }
    std::cout << "\n";
  }
  std::cout << plan.checks.size() << (plan.checks.size() == 1 ? " check" : " checks")
            << ": the model and every run's model are valid. Dry run: nothing run, nothing written.\n";
  return kExitOk;
}

int RunVerify(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "model", "verify");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  const io::ModelFile model = LoadModel(vm, "verify");
  const std::string model_path = vm["model"].as<std::string>();
  if (vm.count("dry-run")) return DryRun(model, model_path, vm.count("sgd") > 0);
  const std::string output = OutputPath(vm, "_verify");
  const bool quiet = vm.count("quiet") > 0;
  VerifyOptions options;
  options.sgd = vm.count("sgd") > 0;
  options.threads = ResolveThreads(vm);
  options.interrupt = InstallInterruptHandler();
  if (ShowProgress(quiet)) {
    options.progress = [](const std::string& status) {
      // One line that fits an 80-column terminal, so that \r returns to its start.
      constexpr std::size_t kWidth = 78;
      const std::string line = status.size() > kWidth ? status.substr(0, kWidth - 3) + "..." : status;
      std::fprintf(stderr, "\r  %-*s", static_cast<int>(kWidth), line.c_str());
      std::fflush(stderr);
    };
  }
  const FlowSetup setup = BuildFlow(model);
  const Verification verification = Verify(model, options);
  if (options.progress) ClearProgressLine();
  if (options.interrupt->load()) {
    std::cerr << "moeflow verify: interrupted; nothing written\n";
    return kExitInterrupted;
  }
  io::WriteFileAtomically(output, io::VerifyResultFile(model, setup, verification, CommandLine("verify", args)));
  if (!quiet) std::cout << "model:   " << model_path << "\n" << io::VerifyReport(verification) << "written: " << output << "\n";
  return verification.AllPassed() ? kExitOk : kExitCheckFailed;
}

}  // namespace

int RunVerifyCommand(const Args& args) { return RunVerify(args); }

}  // namespace moeflow::cli
