// SGD benchmarks: time per step of the two engines, and mini-batch throughput against the
// machine's matrix-multiply rate. Peer figure (peers.md): nn2pp online SGD, erf K = M = 2,
// d = 1000, B = 1: 39 µs per step.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <random>

#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "common/random.hpp"

namespace {

constexpr long long kSteps = 20000;

moeflow::FlowSetup Committee(long long d, int batch, const char* engine, long long steps) {
  moeflow::io::ModelFile model = moeflow::io::ModelFile::Load(MOEFLOW_MODELS_DIR "/committee_erf_k2m2.ini");
  model.Set("d=" + std::to_string(d));
  model.Set("sgd.batch=" + std::to_string(batch));
  model.Set(std::string("sgd.engine=") + engine);
  model.Set("output.points=2");
  moeflow::FlowSetup setup = moeflow::BuildFlow(model);
  setup.options.t_end = setup.sgd.learning_rate * static_cast<double>(steps);
  setup.options.output_times = {0.0, setup.options.t_end};
  setup.events.clear();
  return setup;
}

// Online SGD, erf K = M = 2, B = 1: time per step (counter us_per_step).
void BM_SgdStep(benchmark::State& state, const char* engine) {
  const moeflow::FlowSetup setup = Committee(state.range(0), 1, engine, kSteps);
  for (auto _ : state) {
    const moeflow::SgdRun run =
        moeflow::SimulateSgd(*setup.system, setup.initial_gram, setup.sgd, setup.options, {}, 1);
    benchmark::DoNotOptimize(run.summary.accepted_steps);
  }
  state.counters["us_per_step"] =
      benchmark::Counter(static_cast<double>(kSteps) * 1e-6, benchmark::Counter::kIsIterationInvariantRate |
                                                                 benchmark::Counter::kInvert);
}
BENCHMARK_CAPTURE(BM_SgdStep, vectors, "vectors")->Arg(1000)->Arg(4000)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SgdStep, overlaps, "overlaps")->Arg(1000)->Arg(4000)->Unit(benchmark::kMillisecond);

// Mini-batch SGD at d = 4096, B = 256 (vectors engine): samples·d per second.
void BM_SgdMiniBatchThroughput(benchmark::State& state) {
  const long long d = 4096, steps = 50;
  const int batch = 256;
  const moeflow::FlowSetup setup = Committee(d, batch, "vectors", steps);
  for (auto _ : state) {
    const moeflow::SgdRun run =
        moeflow::SimulateSgd(*setup.system, setup.initial_gram, setup.sgd, setup.options, {}, 1);
    benchmark::DoNotOptimize(run.summary.accepted_steps);
  }
  state.counters["samples_d_per_s"] = benchmark::Counter(static_cast<double>(steps * batch * d),
                                                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SgdMiniBatchThroughput)->Unit(benchmark::kMillisecond);

// The machine's matrix-multiply rate with Eigen (flops per second), the yardstick of the
// mini-batch throughput: C (256 × 4) = X (256 × 4096) · Uᵀ, the shape of the SGD step, and a
// square 512 product.
void BM_Gemm(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1), n = state.range(2);
  const Eigen::MatrixXd a = Eigen::MatrixXd::Random(m, k), b = Eigen::MatrixXd::Random(k, n);
  Eigen::MatrixXd c(m, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["flops"] = benchmark::Counter(2.0 * static_cast<double>(m * k * n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Gemm)->Args({256, 4096, 4})->Args({512, 512, 512})->Unit(benchmark::kMicrosecond);

// Standard normal draws per second (the vectors engine draws B·d of them per step): the
// simulator's ziggurat on xoshiro256++, and std::normal_distribution on mt19937_64 for scale.
void BM_ZigguratDraws(benchmark::State& state) {
  moeflow::rng::Xoshiro256 rng(1);
  const moeflow::rng::ZigguratNormal& normal = moeflow::rng::StandardNormal();
  double sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < 4096; ++i) sum += normal(rng);
  }
  benchmark::DoNotOptimize(sum);
  state.counters["draws"] = benchmark::Counter(4096, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ZigguratDraws);

void BM_NormalDraws(benchmark::State& state) {
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal;
  double sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < 4096; ++i) sum += normal(rng);
  }
  benchmark::DoNotOptimize(sum);
  state.counters["draws"] = benchmark::Counter(4096, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_NormalDraws);

}  // namespace
