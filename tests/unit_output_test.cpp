// The per-sample output of a block (src/models/unit_output.hpp), the one formula of the SGD step
// and of the sampled backend, against independent references:
//   - ∂f/∂h against central finite differences of f (step 1e-6, tolerance 1e-7 absolute + 1e-6
//     relative), for plain, gated, hard top-k (away from selection ties, where f is smooth in the
//     expert projections and piecewise smooth in the logits) and soft top-k blocks (smooth everywhere
//     but at ties of the k-th and (k+1)-th logits);
//   - the soft top-k tends to the hard one as the selection temperature goes to 0 (|Δf| ≤ 1e-9 at
//     τ_s = 1e-3 when the k-th and (k+1)-th logits differ by 0.1 or more), and its output is
//     continuous where the hard selection jumps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "models/unit_output.hpp"
#include "moeflow/links/link.hpp"

namespace moeflow {
namespace {

constexpr int kUnits = 4;

UnitBlock Block(int top_k, bool softmax, double selection_temperature, bool gated = false, int neurons = 1) {
  UnitBlock b;
  b.units = kUnits;
  b.neurons = neurons;
  b.link = MakeLink("hermite(0.2, 1, 0.5, 0.3)");
  if (gated) b.gate = MakeLink("sigmoid");
  b.top_k = top_k;
  b.temperature = 0.7;
  b.softmax = softmax;
  b.selection_temperature = selection_temperature;
  return b;
}

// Projections: experts in columns 0..4J-1 (J neurons each), routers in the next 4; logits spread so
// no two are within 0.1.
std::vector<double> Projections(std::mt19937_64& rng, int neurons = 1) {
  std::normal_distribution<double> normal;
  const int e = kUnits * neurons;
  std::vector<double> h(e + kUnits);
  for (;;) {
    for (double& x : h) x = normal(rng);
    bool spread = true;
    for (int i = 0; i < kUnits; ++i) {
      for (int j = 0; j < i; ++j) spread = spread && std::abs(h[e + i] - h[e + j]) >= 0.1;
    }
    if (spread) return h;
  }
}

void ExpectGradientMatchesFiniteDifferences(const UnitBlock& block, const char* name) {
  const BlockOutput out(block, 0, block.HasRouters() ? block.ExpertVectors() : -1);
  const std::vector<double> a = {1.0, -0.8, 0.0, 1.3};  // a zero weight: a pruned unit
  BlockOutput::Scratch scratch;
  std::mt19937_64 rng(7);
  const int columns = block.Vectors();
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> h = Projections(rng, block.neurons), grad(h.size(), -1.0);
    out.Evaluate(h.data(), a.data(), grad.data(), &scratch);
    for (int c = 0; c < columns; ++c) {
      const double step = 1e-6;
      std::vector<double> up = h, down = h;
      up[c] += step;
      down[c] -= step;
      const double fd = (out.Evaluate(up.data(), a.data(), nullptr, &scratch) -
                         out.Evaluate(down.data(), a.data(), nullptr, &scratch)) /
                        (2 * step);
      EXPECT_NEAR(grad[c], fd, 1e-7 + 1e-6 * std::abs(fd)) << name << ", trial " << trial << ", column " << c;
    }
  }
}

TEST(BlockOutput, GradientMatchesFiniteDifferences) {
  ExpectGradientMatchesFiniteDifferences(Block(0, true, 0.0), "plain");
  ExpectGradientMatchesFiniteDifferences(Block(0, true, 0.0, true), "gated");
  for (int k = 1; k <= kUnits; ++k) {
    for (bool softmax : {true, false}) {
      const std::string kind = std::string(softmax ? "softmax" : "equal") + " top-" + std::to_string(k);
      ExpectGradientMatchesFiniteDifferences(Block(k, softmax, 0.0), ("hard " + kind).c_str());
      ExpectGradientMatchesFiniteDifferences(Block(k, softmax, 0.3), ("soft " + kind).c_str());
      // Experts that are two-layer networks of J = 3 neurons (Kawata et al.'s MoE).
      ExpectGradientMatchesFiniteDifferences(Block(k, softmax, 0.0, false, 3), ("hard J=3 " + kind).c_str());
      ExpectGradientMatchesFiniteDifferences(Block(k, softmax, 0.3, false, 3), ("soft J=3 " + kind).c_str());
    }
  }
}

// UnitOutputs: φ_i = ∂f/∂a_i against the difference f(a + e_i) − f(a) (exact: f is linear in a
// for every kind of block, the routing weights depending on the logits only), 0 for the pruned unit
// (a_i = 0), and Σ_i a_i φ_i = f; tolerance 1e-12 (round-off of outputs of order 10).
void ExpectUnitOutputsAreTheWeightDerivatives(const UnitBlock& block, const std::string& name) {
  const BlockOutput out(block, 0, block.HasRouters() ? block.ExpertVectors() : -1);
  const std::vector<double> a = {1.0, -0.8, 0.0, 1.3};
  BlockOutput::Scratch scratch;
  std::mt19937_64 rng(3);
  std::vector<double> phi(kUnits);
  for (int trial = 0; trial < 30; ++trial) {
    const std::vector<double> h = Projections(rng, block.neurons);
    out.UnitOutputs(h.data(), a.data(), phi.data(), &scratch);
    const double f = out.Evaluate(h.data(), a.data(), nullptr, &scratch);
    double sum = 0.0;
    for (int i = 0; i < kUnits; ++i) {
      sum += a[i] * phi[i];
      if (a[i] == 0.0) {
        EXPECT_EQ(phi[i], 0.0) << name;
        continue;
      }
      std::vector<double> up = a;
      up[i] += 1.0;
      EXPECT_NEAR(phi[i], out.Evaluate(h.data(), up.data(), nullptr, &scratch) - f, 1e-12)
          << name << ", trial " << trial << ", unit " << i;
    }
    EXPECT_NEAR(sum, f, 1e-12) << name << ", trial " << trial;
  }
}

TEST(BlockOutput, UnitOutputsAreTheWeightDerivatives) {
  ExpectUnitOutputsAreTheWeightDerivatives(Block(0, true, 0.0), "plain");
  ExpectUnitOutputsAreTheWeightDerivatives(Block(0, true, 0.0, true), "gated");
  for (int k = 1; k <= kUnits; ++k) {
    for (bool softmax : {true, false}) {
      const std::string kind = std::string(softmax ? "softmax" : "equal") + " top-" + std::to_string(k);
      ExpectUnitOutputsAreTheWeightDerivatives(Block(k, softmax, 0.0), "hard " + kind);
      ExpectUnitOutputsAreTheWeightDerivatives(Block(k, softmax, 0.3), "soft " + kind);
      ExpectUnitOutputsAreTheWeightDerivatives(Block(k, softmax, 0.0, false, 3), "hard J=3 " + kind);
      ExpectUnitOutputsAreTheWeightDerivatives(Block(k, softmax, 0.3, false, 3), "soft J=3 " + kind);
    }
  }
}

// An expert of J = 2 neurons whose projections are equal is one neuron with twice the weight.
TEST(BlockOutput, TwoEqualNeuronsAreOneNeuronOfTwiceTheWeight) {
  std::mt19937_64 rng(5);
  BlockOutput::Scratch scratch;
  for (const double tau_s : {0.0, 0.3}) {
    const UnitBlock two = Block(2, true, tau_s, false, 2), one = Block(2, true, tau_s);
    const BlockOutput f2(two, 0, two.ExpertVectors()), f1(one, 0, one.ExpertVectors());
    const std::vector<double> a = {1.0, -0.8, 0.5, 1.3};
    std::vector<double> doubled;
    for (double w : a) doubled.push_back(2 * w);
    for (int trial = 0; trial < 20; ++trial) {
      const std::vector<double> h1 = Projections(rng);
      std::vector<double> h2(3 * kUnits);
      for (int i = 0; i < kUnits; ++i) h2[2 * i] = h2[2 * i + 1] = h1[i], h2[2 * kUnits + i] = h1[kUnits + i];
      EXPECT_NEAR(f2.Evaluate(h2.data(), a.data(), nullptr, &scratch),
                  f1.Evaluate(h1.data(), doubled.data(), nullptr, &scratch), 1e-13);
    }
  }
}

TEST(BlockOutput, SoftTopKTendsToTheHardOne) {
  const std::vector<double> a = {1.0, -0.8, 0.5, 1.3};
  BlockOutput::Scratch scratch;
  std::mt19937_64 rng(11);
  for (int k = 1; k < kUnits; ++k) {
    for (bool softmax : {true, false}) {
      const BlockOutput hard(Block(k, softmax, 0.0), 0, kUnits), soft(Block(k, softmax, 1e-3), 0, kUnits);
      for (int trial = 0; trial < 50; ++trial) {
        const std::vector<double> h = Projections(rng);
        EXPECT_NEAR(soft.Evaluate(h.data(), a.data(), nullptr, &scratch),
                    hard.Evaluate(h.data(), a.data(), nullptr, &scratch), 1e-9)
            << "top-" << k << (softmax ? " softmax" : " equal") << ", trial " << trial;
      }
    }
  }
}

// Two logits crossing: the hard top-1 output jumps from one expert to the other, the soft one
// moves continuously (its change over a logit step of 1e-6 is O(1e-6/τ_s)).
TEST(BlockOutput, SoftTopKIsContinuousWhereTheHardSelectionJumps) {
  const std::vector<double> a = {1.0, -1.0, 0.5, 0.5};
  std::vector<double> below = {1.0, 1.0, 0.0, 0.0, 0.5 - 1e-6, 0.5, -2.0, -2.0};
  std::vector<double> above = below;
  above[kUnits] = 0.5 + 1e-6;
  BlockOutput::Scratch scratch;
  const BlockOutput hard(Block(1, true, 0.0), 0, kUnits), soft(Block(1, true, 0.2), 0, kUnits);
  const double jump = hard.Evaluate(above.data(), a.data(), nullptr, &scratch) -
                      hard.Evaluate(below.data(), a.data(), nullptr, &scratch);
  const double move = soft.Evaluate(above.data(), a.data(), nullptr, &scratch) -
                      soft.Evaluate(below.data(), a.data(), nullptr, &scratch);
  EXPECT_GT(std::abs(jump), 1.0);
  EXPECT_LT(std::abs(move), 1e-4);
}

}  // namespace
}  // namespace moeflow
