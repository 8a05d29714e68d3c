// The quadrature population backend (population.backend = quadrature): a Smolyak sparse grid of
// Gauss–Hermite rules, exact for polynomials, on the directions of the polynomial links, times a
// trapezoidal rule on the directions of a softmax router. References: the Gaussian moments
// E[z_1^p_1 … z_m^p_m] = Π (p_j − 1)!! (zero if any p_j is odd), the exact backend where both apply
// (Mehler series, cluster-mean Mehler path), and a seeded Monte Carlo estimate with its error.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "gauss/rules.hpp"
#include "moeflow/error.hpp"
#include "moeflow/models/two_layer.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

double GaussianMoment(const std::vector<int>& powers) {
  double m = 1;
  for (int p : powers) {
    if (p % 2) return 0;
    for (int q = p - 1; q > 1; q -= 2) m *= q;
  }
  return m;
}

// Every monomial of total degree ≤ 2k + 1 is integrated to 1e-12 relative (round-off: the weights
// reach −10² at m = 7); z_1^(2k+2) is not, so the check can tell a rule of the wrong level.
TEST(SparseGaussHermite, ExactForEveryMonomialUpToDegree2kPlus1) {
  for (int m : {1, 2, 3, 7}) {
    for (int k : {0, 1, 2, 3, 4}) {
      if (m == 7 && k == 4) continue;  // 6435 monomials of degree ≤ 9 on 3 thousand nodes: slow-ish
      const detail::CubatureRule rule = detail::SparseGaussHermite(m, k);
      ASSERT_EQ(rule.dimension, m);
      std::vector<int> powers(static_cast<std::size_t>(m), 0);
      int checked = 0;
      std::function<void(int, int)> visit = [&](int j, int left) {
        if (j == m) {
          double sum = 0, scale = 0;
          for (int i = 0; i < rule.size(); ++i) {
            double v = rule.w[i];
            for (int c = 0; c < m; ++c) v *= std::pow(rule.x[static_cast<std::size_t>(i * m + c)], powers[c]);
            sum += v;
            scale += std::abs(v);
          }
          EXPECT_NEAR(sum, GaussianMoment(powers), 1e-12 * std::max(1.0, scale)) << "m = " << m << ", k = " << k;
          ++checked;
          return;
        }
        for (int p = 0; p <= left; ++p) {
          powers[j] = p;
          visit(j + 1, left - p);
        }
        powers[j] = 0;
      };
      visit(0, 2 * k + 1);
      EXPECT_GT(checked, 0);
      double top = 0;
      for (int i = 0; i < rule.size(); ++i) top += rule.w[i] * std::pow(rule.x[static_cast<std::size_t>(i * m)], 2 * k + 2);
      std::vector<int> first(static_cast<std::size_t>(m), 0);
      first[0] = 2 * k + 2;
      EXPECT_GT(std::abs(top - GaussianMoment(first)), 1e-3) << "m = " << m << ", k = " << k;
    }
  }
  EXPECT_EQ(detail::SparseGaussHermite(0, 3).size(), 1);
}

using testing::BuildFromText;
using testing::Tangent;

double MaxRelative(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-300, b.cwiseAbs().maxCoeff());
}

// Polynomial links without routers: the sparse grid alone, exact, so the backend must reproduce the
// exact backend (Mehler series; with cluster means, the shifted-series path) to round-off: risk,
// D, the drift and the trained weights' gradient, to 1e-11 relative.
TEST(QuadratureBackend, ReproducesTheExactBackendForPolynomialLinksToRoundOff) {
  const std::vector<std::string> models = {
      // committee of He3 units with trained second-layer weights
      "d = 50\nseed = 4\n[teacher]\nunits = 2\nlink = h(3)\n[student]\nunits = 3\nlink = h(3)\n"
      "init = random\nweights_lr = 1\n",
      // cluster inputs (the means shift every projection), mixed links of degree up to 4
      "d = 40\nseed = 2\n[clusters]\ncount = 2\nscale = 1.5\nglobal_signs = 1, -1\n"
      "[teacher]\nunits = 3\nlinks = h(3), hermite(0, 0, 0.5, 1), h(3)\n"
      "[student]\nunits = 3\nlink = hermite(0, 0.3, 0.2, 1, 0.4)\ninit = random\n"};
  for (const std::string& text : models) {
    const FlowSetup exact = BuildFromText(text);
    const FlowSetup quadrature = BuildFromText(text, {"population.backend=quadrature"});
    ASSERT_FALSE(exact.system->PointBackend());
    ASSERT_TRUE(quadrature.system->Quadrature());
    const Eigen::MatrixXd& gram = exact.initial_gram;
    EXPECT_NEAR(quadrature.system->Risk(gram), exact.system->Risk(gram), 1e-11 * exact.system->Risk(gram));
    EXPECT_LT(MaxRelative(Tangent(*quadrature.system, gram), Tangent(*exact.system, gram)), 1e-11);
    Eigen::VectorXd fq, fe;
    quadrature.system->Drift(exact.initial_state, fq);
    exact.system->Drift(exact.initial_state, fe);
    EXPECT_LT(MaxRelative(fq, fe), 1e-11);
  }
}

// A softmax router over M = 2 experts of J = 2 neurons on cluster inputs (the shape of
// models/cluster_moe.ini at d = 40): the mean of 16 independent sampled point sets (16384 points
// each) within 5 standard errors of the quadrature backend, for the risk and every entry of D; and
// the gate rule converged: its automatic nodes (τ = 0.3: 141) against 513, to 1e-9 relative (the
// rule's error falls geometrically: 5e-5 at 65 nodes, 2e-10 at 129).
const char* kClusterMoe = R"(
d = 40
seed = 5
[clusters]
count = 2
scale = 3
global_signs = 1, -1
[teacher]
units = 3
links = h(3), h(3), h(3)
[student]
units = 2
neurons = 2
link = h(3)
top_k = 2
router_weights = softmax
temperature = 0.3
init = random
[population]
backend = quadrature
)";

TEST(QuadratureBackend, SoftmaxRouterAgreesWithMonteCarloAndConvergesInTheGateNodes) {
  const FlowSetup quadrature = BuildFromText(kClusterMoe);
  const Eigen::MatrixXd& gram = quadrature.initial_gram;
  const TwoLayerFlow::SampledTerms q = quadrature.system->SampleTerms(gram, true, false);
  const FlowSetup fine = BuildFromText(kClusterMoe, {"population.gate_nodes=513"});
  const TwoLayerFlow::SampledTerms f = fine.system->SampleTerms(gram, true, false);
  EXPECT_NEAR(q.risk, f.risk, 1e-9 * f.risk);
  EXPECT_LT(MaxRelative(q.gradient_overlaps, f.gradient_overlaps), 1e-9);
  const FlowSetup coarse = BuildFromText(kClusterMoe, {"population.gate_nodes=65"});  // control: visibly off
  EXPECT_GT(MaxRelative(coarse.system->SampleTerms(gram, true, false).gradient_overlaps, f.gradient_overlaps), 1e-6);

  testing::ExpectWithinFiveStandardErrors("quadrature", q.risk, q.gradient_overlaps, 16, [&](int s) {
    const FlowSetup sampled = BuildFromText(kClusterMoe, {"population.backend=sampled", "population.samples=16384",
                                                          "population.seed=" + std::to_string(700 + s)});
    const TwoLayerFlow::SampledTerms t = sampled.system->SampleTerms(gram, true, false);
    return testing::PointEstimate{t.risk, t.gradient_overlaps};
  });
}

// What sampling cannot do: with every student vector orthogonal to the local teacher w*_1 (and the
// means orthogonal to it by construction), u = w*_1·x is independent of every other projection and
// enters y only as He3(u), so D(a, w*_1) = E[(f − y) ∂f/∂h_a u] = −E[He3(u) u] E[∂f/∂h_a] = 0
// exactly: no drift towards w*_1 at zero overlap. The quadrature backend gives 0 to round-off
// (1e-14); the sampled backend (N = 4096, the old default of models/cluster_moe.ini) an O(N^(-1/2))
// spurious drift, > 1e-4, which is what made its escapes from O(d^(-1/2)) overlaps depend on N.
TEST(QuadratureBackend, KeepsTheZeroDriftOfAnOrthogonalTeacherExactly) {
  const FlowSetup quadrature = BuildFromText(kClusterMoe);
  const int p = quadrature.system->students();
  Eigen::MatrixXd gram = quadrature.initial_gram;
  // The students' overlaps with w*_1 set to zero: the Gram matrix of the same students with their
  // w*_1 components turned into a fresh direction (still PSD).
  gram.block(0, p, p, 1).setZero();
  gram.block(p, 0, 1, p).setZero();
  const Eigen::MatrixXd dq = quadrature.system->SampleTerms(gram, true, false).gradient_overlaps;
  const FlowSetup sampled = BuildFromText(kClusterMoe, {"population.backend=sampled", "population.samples=4096"});
  const Eigen::MatrixXd ds = sampled.system->SampleTerms(gram, true, false).gradient_overlaps;
  const double scale = dq.cwiseAbs().maxCoeff();
  ASSERT_GT(scale, 1e-2);
  EXPECT_LT(dq.col(p).cwiseAbs().maxCoeff(), 1e-14 * scale);
  EXPECT_GT(ds.col(p).cwiseAbs().maxCoeff(), 1e-4 * scale);
}

// population.backend = auto picks the quadrature backend exactly where it is exact and affordable:
// a softmax router over all experts with polynomial links under gradient flow; a top-k selection,
// a non-polynomial link or the online-SGD term (level 2D) fall back to sampled points, and units
// with their own gates keep the exact gated kernels.
TEST(QuadratureBackend, AutoPicksItOnlyWhereItIsExact) {
  auto backend = [](const std::string& text, const std::vector<std::string>& overrides) {
    std::vector<std::string> all = {"population.backend=auto"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    const FlowSetup setup = BuildFromText(text, all);
    return std::string(setup.system->Quadrature() ? "quadrature" : setup.system->PointBackend() ? "sampled" : "exact");
  };
  EXPECT_EQ(backend(kClusterMoe, {}), "quadrature");
  EXPECT_EQ(backend(kClusterMoe, {"student.top_k=1"}), "sampled");
  EXPECT_EQ(backend(kClusterMoe, {"student.link=erf"}), "sampled");
  EXPECT_EQ(backend(kClusterMoe, {"dynamics.kind=online_sgd"}), "sampled");
  const std::string gated = "d = 20\n[teacher]\nunits = 1\nlink = h(3)\ngate = sigmoid\n[student]\nunits = 2\n"
                            "link = h(3)\ngate = sigmoid\nvectors = normalised\ninit = random\n";
  EXPECT_EQ(backend(gated, {}), "exact");
}

TEST(QuadratureBackend, ModelsItCannotIntegrateAreRejectedByName) {
  auto message = [](const std::string& text, const std::vector<std::string>& overrides) {
    try {
      BuildFromText(text, overrides);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message(kClusterMoe, {"student.link=erf"}).find("link 'erf' is not a polynomial"), std::string::npos);
  EXPECT_NE(message(kClusterMoe, {"student.top_k=1"}).find("student.top_k"), std::string::npos);
  EXPECT_NE(message(kClusterMoe, {"population.gate_nodes=2"}).find("population.gate_nodes"), std::string::npos);
  EXPECT_NE(message(kClusterMoe, {"population.samples=100"}).find("population.samples"), std::string::npos);
  const std::string gated = "d = 20\n[teacher]\nunits = 1\nlink = h(3)\ngate = sigmoid\n[student]\nunits = 2\n"
                            "link = h(3)\ngate = sigmoid\nvectors = normalised\ninit = random\n";
  EXPECT_NE(message(gated, {"population.backend=quadrature"}).find("student.gate"), std::string::npos);
}

}  // namespace
}  // namespace moeflow
