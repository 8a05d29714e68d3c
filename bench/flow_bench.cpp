// Population-flow benchmarks: whole integrations of shipped models.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

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

namespace {

// models/committee_erf_k2m2.ini (online-SGD limit, η̃ = 0.5) with K students, M teachers and
// further overrides.
moeflow::FlowSetup CommitteeSetup(int students, int teachers, double t_end, const std::vector<std::string>& more = {}) {
  moeflow::io::ModelFile model = moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/committee_erf_k2m2.ini");
  model.Set("student.units=" + std::to_string(students));
  model.Set("teacher.units=" + std::to_string(teachers));
  model.Set("integrate.t_end=" + std::to_string(t_end));
  for (const std::string& s : more) model.Set(s);
  return moeflow::BuildFlow(model);
}

void MeasureDrift(benchmark::State& state, const moeflow::FlowSetup& setup) {
  Eigen::VectorXd dxdt(setup.initial_state.size());
  for (auto _ : state) {
    setup.system->Drift(setup.initial_state, dxdt);
    benchmark::DoNotOptimize(dxdt.data());
  }
}

// One right-hand-side evaluation of the erf committee (K, M) in the online-SGD limit
// (gradient-flow drift + the η̃ E[g g] term). Peer figures (peers.md, per RHS + Euler update):
// nn2pp 1.2 µs (2,2), 12.3 µs (4,4), 86 µs (8,4), 166 µs (8,8); phdiag 44.5 µs (8,4).
void BM_CommitteeErfDrift(benchmark::State& state) {
  MeasureDrift(state, CommitteeSetup(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)), 100));
}
BENCHMARK(BM_CommitteeErfDrift)->Args({2, 2})->Args({4, 4})->Args({8, 4})->Args({8, 8})->Unit(benchmark::kMicrosecond);

// The same with trained second-layer weights (student.weights_lr = 1): the weights' drift
// ∂R/∂a_i = Σ_v E[φ_i φ_v] s_v adds one pass over the unit pairs' output moments.
void BM_CommitteeErfDriftTrainedWeights(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  MeasureDrift(state, CommitteeSetup(k, k, 100, {"student.weights_lr=1", "student.weight=0.5"}));
}
BENCHMARK(BM_CommitteeErfDriftTrainedWeights)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMicrosecond);

// The He3 committee (student and teacher link He_3, free vectors, online-SGD limit): no closed
// form, the engine's exact Hermite diagrams. Peer figures (peers.md, per RHS + Euler update):
// committee_learning 9.2 µs (1,1), 19.9 µs (4,1); giant-learning 85 µs, 6389 µs.
void BM_CommitteeHe3Drift(benchmark::State& state) {
  MeasureDrift(state, CommitteeSetup(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)), 100,
                                     {"student.link=he(3)", "teacher.link=he(3)"}));
}
BENCHMARK(BM_CommitteeHe3Drift)->Args({1, 1})->Args({4, 1})->Unit(benchmark::kMicrosecond);

// Whole integrations of the committee, dopri5 at rel_tol 1e-8, abs_tol 1e-10, without events.
void MeasureIntegration(benchmark::State& state, moeflow::FlowSetup setup) {
  setup.options.rel_tol = 1e-8;
  setup.options.abs_tol = 1e-10;
  long long steps = 0;
  for (auto _ : state) {
    moeflow::Trajectory trajectory;
    steps = moeflow::Integrate(*setup.system, setup.initial_state, setup.options, {}, &trajectory).accepted_steps;
  }
  state.counters["accepted_steps"] = static_cast<double>(steps);
}

// The span nn2pp covers to its t = 1000 at lr 0.5 (its time is steps/d, ours η·steps = 0.5·1000),
// K = M, dopri5 at rel_tol 1e-8. Peer (Euler, dt = 0.01): 0.19 s (2), 1.23 s (4), 16.6 s (8).
void BM_CommitteeErfToNn2ppSpan(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  MeasureIntegration(state, CommitteeSetup(k, k, 500));
}
BENCHMARK(BM_CommitteeErfToNn2ppSpan)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond);

// erf K = 8 students, M = 4 teachers to t = 10^4 at η̃ = 0.5, dopri5 at rel_tol 1e-8: the span
// phdiag_sgd needs ~40 min for (peers.md). Its time unit is not stated there; ours, η·steps,
// covers at least as many steps per unit as steps/d whenever η̃ ≤ 1.
void BM_CommitteeErf84ToPhdiagSpan(benchmark::State& state) { MeasureIntegration(state, CommitteeSetup(8, 4, 1e4)); }
BENCHMARK(BM_CommitteeErf84ToPhdiagSpan)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace

namespace {

moeflow::FlowSetup SoftRoutedSetup() {
  return moeflow::BuildFlow(moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/soft_routed_moe.ini"));
}

// One right-hand side of the soft-routed MoE, m* = 5, m = 25 (1775 state entries, 750 unit
// pairs, each ~10 pair expectations by the diagram formula). No peer handles gated units.
void BM_SoftRoutedMoeDrift(benchmark::State& state) {
  const moeflow::FlowSetup setup = SoftRoutedSetup();
  Eigen::VectorXd dxdt(setup.initial_state.size());
  for (auto _ : state) {
    setup.system->Drift(setup.initial_state, dxdt);
    benchmark::DoNotOptimize(dxdt.data());
  }
}
BENCHMARK(BM_SoftRoutedMoeDrift)->Unit(benchmark::kMicrosecond);

// The shipped model to t = 60 (d = 1000, dopri5 rel_tol 1e-8), with its 200 output points.
void BM_SoftRoutedMoeToT60(benchmark::State& state) {
  const moeflow::FlowSetup setup = SoftRoutedSetup();
  long long steps = 0;
  for (auto _ : state) {
    moeflow::Trajectory trajectory;
    steps = moeflow::Integrate(*setup.system, setup.initial_state, setup.options, setup.events, &trajectory)
                .accepted_steps;
  }
  state.counters["accepted_steps"] = static_cast<double>(steps);
}
BENCHMARK(BM_SoftRoutedMoeToT60)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace

namespace {

// One right-hand-side evaluation of the top-k MoE (models/topk_moe.ini: E = S = 4 experts with
// routers, 16 vectors) on the sampled backend, against the number of points N: the projections
// h = L z (N × 16), the block outputs and gradients at every point, D = E[g hᵀ] and E[g gᵀ].
void BM_TopKMoeSampledDrift(benchmark::State& state) {
  moeflow::io::ModelFile model = moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/topk_moe.ini");
  model.Set("population.samples=" + std::to_string(state.range(0)));
  const moeflow::FlowSetup setup = moeflow::BuildFlow(model);
  Eigen::VectorXd dxdt(setup.initial_state.size());
  for (auto _ : state) {
    setup.system->Drift(setup.initial_state, dxdt);
    benchmark::DoNotOptimize(dxdt.data());
  }
  state.counters["time_per_point"] =
      benchmark::Counter(static_cast<double>(state.range(0)), benchmark::Counter::kIsIterationInvariantRate |
                                                                  benchmark::Counter::kInvert);
}
BENCHMARK(BM_TopKMoeSampledDrift)->Arg(8192)->Arg(32768)->Unit(benchmark::kMicrosecond);

// The shipped top-k MoE to t = 100 (default 8192 points, rel_tol 1e-4). Arg 0: no events; 1: the
// model's events (best cosines, from the Gram matrix); 2: those and one on the sampled risk that
// never happens, which makes every accepted step compute the risk over the points for the event
// check, as every event check did before FlowSystem::ObserveSome.
void BM_TopKMoeFlow(benchmark::State& state) {
  const moeflow::FlowSetup setup =
      moeflow::BuildFlow(moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/topk_moe.ini"));
  std::vector<moeflow::EventSpec> events;
  if (state.range(0) >= 1) events = setup.events;
  if (state.range(0) == 2) events.push_back({"never", "risk", moeflow::Comparison::kLess, -1.0, false});
  long long steps = 0;
  for (auto _ : state) {
    moeflow::Trajectory trajectory;
    const auto summary = moeflow::Integrate(*setup.system, setup.initial_state, setup.options, events, &trajectory);
    steps = summary.accepted_steps;
    benchmark::DoNotOptimize(summary.t_final);
  }
  state.counters["accepted_steps"] = static_cast<double>(steps);
  state.SetLabel(state.range(0) == 0 ? "no events" : state.range(0) == 1 ? "cosine events" : "cosine events and a risk event");
}
BENCHMARK(BM_TopKMoeFlow)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->Iterations(1);

// One right-hand side of models/cluster_moe.ini (softmax router over 2 experts of 2 h3 neurons,
// 2 clusters) at its initial state: sampled over 4096 points (the shipped setting before the
// quadrature backend) against the quadrature backend as shipped (65 gate nodes × 589 sparse-grid
// nodes).
void BM_ClusterMoeDrift(benchmark::State& state) {
  moeflow::io::ModelFile model = moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/cluster_moe.ini");
  model.Set(state.range(0) == 0 ? "population.backend=sampled" : "population.backend=quadrature");
  if (state.range(0) == 0) {
    model.Set("population.samples=4096");
    model.Set("population.gate_nodes=");  // a key of the quadrature backend
  }
  const moeflow::FlowSetup setup = moeflow::BuildFlow(model);
  Eigen::VectorXd dxdt(setup.initial_state.size());
  for (auto _ : state) {
    setup.system->Drift(setup.initial_state, dxdt);
    benchmark::DoNotOptimize(dxdt.data());
  }
  state.SetLabel(state.range(0) == 0 ? "sampled, 4096 points" : "quadrature");
}
BENCHMARK(BM_ClusterMoeDrift)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// The event check of one accepted step of models/cluster_moe.ini (quadrature backend as shipped) at
// its initial state: Observe (every observable, the risk over the nodes included: what each check
// cost before FlowSystem::ObserveSome) against ObserveSome for what the model's events read (m_abs,
// routing: from the Gram matrix and a closed form). Compare with BM_ClusterMoeDrift/1: a dopri5
// step takes about 6 right-hand sides.
void BM_ClusterMoeEventCheck(benchmark::State& state) {
  const moeflow::FlowSetup setup = moeflow::BuildFlow(moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/cluster_moe.ini"));
  const auto& observables = setup.system->Observables();
  std::vector<moeflow::ObservableSelector> selectors;
  std::vector<moeflow::EventRecord> pending;
  for (const moeflow::EventSpec& e : setup.events) {
    selectors.emplace_back(e.observable, observables, e.name);
    pending.push_back({e});
  }
  const std::vector<bool> wanted =
      moeflow::ObservablesPendingEventsRead(selectors, pending, static_cast<int>(observables.size()));
  Eigen::VectorXd values;
  for (auto _ : state) {
    if (state.range(0) == 0) {
      setup.system->Observe(setup.initial_state, &values);
    } else {
      setup.system->ObserveSome(setup.initial_state, wanted, &values);
    }
    benchmark::DoNotOptimize(values.data());
  }
  state.SetLabel(state.range(0) == 0 ? "Observe: everything" : "ObserveSome: what the events read");
}
BENCHMARK(BM_ClusterMoeEventCheck)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace
