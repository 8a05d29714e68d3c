// Gaussian-expectation and Hermite-coefficient benchmarks (issue #3).
#include <benchmark/benchmark.h>

#include <cmath>

#include "moeflow/gauss/expectation.hpp"
#include "moeflow/links/hermite.hpp"

namespace {

using moeflow::ExpectationBackend;

// Two-point erf expectation E[g(a) g(b)], g = erf(·/√2): the closed form (auto) and the quadrature.
void BM_TwoPointErf(benchmark::State& state) {
  const std::vector<moeflow::LinkPtr> f{moeflow::MakeLink("erf_sqrt2"), moeflow::MakeLink("erf_sqrt2")};
  Eigen::MatrixXd cov(2, 2);
  cov << 1.0, 0.3, 0.3, 0.8;
  const Eigen::VectorXd mean = Eigen::VectorXd::Zero(2);
  const auto backend = static_cast<ExpectationBackend>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(moeflow::Expect(f, mean, cov, backend).value);
  state.SetLabel(moeflow::ToString(backend));
}
BENCHMARK(BM_TwoPointErf)
    ->Arg(static_cast<int>(ExpectationBackend::kClosedForm))
    ->Arg(static_cast<int>(ExpectationBackend::kQuadrature))
    ->Arg(static_cast<int>(ExpectationBackend::kWhitened))
    ->Unit(benchmark::kMicrosecond);

// The soft-routed MoE pair term E[π(r_a) He3(h_a) π(r_b) He3(h_b)], π = sigmoid.
void BM_FourPointHe3Sigmoid(benchmark::State& state) {
  const std::vector<moeflow::LinkPtr> f{moeflow::MakeLink("sigmoid"), moeflow::MakeLink("he(3)"),
                                        moeflow::MakeLink("sigmoid"), moeflow::MakeLink("he(3)")};
  Eigen::MatrixXd cov(4, 4);
  cov << 1, 0.05, 0.3, 0.02,  //
      0.05, 1, 0.01, 0.4,     //
      0.3, 0.01, 1, 0.03,     //
      0.02, 0.4, 0.03, 1;
  const Eigen::VectorXd mean = Eigen::VectorXd::Zero(4);
  const auto backend = static_cast<ExpectationBackend>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(moeflow::Expect(f, mean, cov, backend).value);
  state.SetLabel(moeflow::ToString(backend));
}
BENCHMARK(BM_FourPointHe3Sigmoid)
    ->Arg(static_cast<int>(ExpectationBackend::kHermite))
    ->Arg(static_cast<int>(ExpectationBackend::kQuadrature))
    ->Arg(static_cast<int>(ExpectationBackend::kWhitened))
    ->Unit(benchmark::kMicrosecond);

// Four smooth non-polynomial factors E[tanh(a) sigmoid(b) erf(c) softplus(d)], two of them
// correlated at 0.999: the case where only the quadratures reach 1e-9.
void BM_FourPointSmooth(benchmark::State& state) {
  const std::vector<moeflow::LinkPtr> f{moeflow::MakeLink("tanh"), moeflow::MakeLink("sigmoid"),
                                        moeflow::MakeLink("erf"), moeflow::MakeLink("softplus")};
  Eigen::Matrix4d b;  // Σ = B Bᵀ: rows 0 and 1 at correlation 0.999
  b << 1.0, 0.0, 0.0, 0.0,  //
      0.95, 0.0425, 0.0, 0.0,   //
      0.3, 0.2, 0.9, 0.0,       //
      -0.2, 0.1, 0.4, 0.9;
  const Eigen::MatrixXd cov = b * b.transpose();
  const Eigen::Vector4d mean(0.3, -0.2, 0.1, 0.5);
  const auto backend = static_cast<ExpectationBackend>(state.range(0));
  moeflow::ExpectationOptions options;
  if (backend == ExpectationBackend::kQuadrature) options.quadrature_nodes = static_cast<int>(state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(moeflow::Expect(f, mean, cov, backend, options).value);
  state.SetLabel(moeflow::ToString(backend));
}
BENCHMARK(BM_FourPointSmooth)
    ->Args({static_cast<int>(ExpectationBackend::kWhitened), 0})
    ->Args({static_cast<int>(ExpectationBackend::kQuadrature), 48})
    ->Args({static_cast<int>(ExpectationBackend::kQuadrature), 64})
    ->Unit(benchmark::kMillisecond);

void BM_SigmoidCoefficientsK40(benchmark::State& state) {
  const moeflow::LinkPtr sigmoid = moeflow::MakeLink("sigmoid");
  for (auto _ : state) benchmark::DoNotOptimize(moeflow::ExpandHermite(*sigmoid, 40).coefficients[1]);
}
BENCHMARK(BM_SigmoidCoefficientsK40)->Unit(benchmark::kMicrosecond);

}  // namespace
