// Population-flow benchmarks: whole integrations of shipped models.
#include <benchmark/benchmark.h>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"

namespace {

// Single-index He3 from m0 = d^(-1/2) to the escape event m = 0.5 (stops there), at the
// model's default tolerances. Peer figure (peers.md): giant-learning ~85 s at d = 1024.
void BM_SingleIndexHe3Escape(benchmark::State& state) {
  moeflow::io::ModelFile model = moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/single_index_he3.ini");
  model.Set("d=" + std::to_string(state.range(0)));
  const moeflow::FlowSetup setup = moeflow::BuildFlow(model);
  long long steps = 0;
  for (auto _ : state) {
    moeflow::Trajectory trajectory;
    const auto summary = moeflow::Integrate(*setup.system, setup.initial_state, setup.options,
                                            setup.events, &trajectory);
    steps = summary.accepted_steps;
    benchmark::DoNotOptimize(summary.events.front().time);
  }
  state.counters["accepted_steps"] = static_cast<double>(steps);
}
BENCHMARK(BM_SingleIndexHe3Escape)->Arg(1024)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

}  // namespace
