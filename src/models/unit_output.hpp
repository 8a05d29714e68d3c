// Internal: the output of a block of units at one input, from the projections of its vectors,
// and its derivatives with respect to them. The one per-sample formula of every model: the SGD
// step (src/sgd/batch_gradient.cpp) and the sampled population backend (two_layer.cpp) call it.
//   plain     f = Σ_i a_i σ(h_i)
//   gated     f = Σ_i a_i π(r_i) σ(h_i)                            (soft routing, own gate per unit)
//   top-k     f = Σ_{i ∈ S} c_i o_i, o_i = a_i Σ_j σ(h_(i,j)) over expert i's J neurons (J = 1: a_i σ(h_i)),
//             S = the k largest logits r_i/τ (ties: lower index),
//             c = softmax of the selected logits (router_weights = softmax) or 1 (equal);
//             ∂f/∂r_j = c_j (o_j − f)/τ for j ∈ S under softmax, 0 otherwise: no
//             gradient flows through the discrete selection (standard top-k).
//   soft top-k (selection_temperature τ_s > 0): every unit weighted by a logistic mask around the
//             midpoint of the k-th and (k+1)-th logits, gradient through the mask (EvaluateSoft).
#pragma once

#include <vector>

#include "moeflow/models/two_layer.hpp"

namespace moeflow {

class BlockOutput {
 public:
  // `expert` and `router`: the columns of the block's expert and router projections in a row of
  // projections (router −1 without routers).
  BlockOutput(const UnitBlock& block, int expert, int router);

  struct Scratch {
    std::vector<int> order;
    std::vector<double> weight;
    std::vector<double> mask;
    std::vector<double> output;
  };
  // f at the projections `h` (a row in the model's vector order) with per-unit second-layer
  // weights `a`; if `grad` is not null, writes ∂f/∂h at the block's columns of `grad`; if `phi` is
  // not null, writes φ_i = ∂f/∂a_i for every unit to phi[0..units) (f = Σ_i a_i φ_i: the routing
  // weights do not depend on a), 0 for a pruned unit (a_i = 0).
  double Evaluate(const double* h, const double* a, double* grad, Scratch* scratch, double* phi = nullptr) const;
  // φ alone (Evaluate's `phi`).
  void UnitOutputs(const double* h, const double* a, double* phi, Scratch* scratch) const {
    Evaluate(h, a, nullptr, scratch, phi);
  }

 private:
  double EvaluateSoft(const double* h, const double* a, double* grad, int k, Scratch* scratch, double* phi) const;
  // Σ_j σ(h_(i,j)) over expert i's neurons (routed blocks; o_i = a_i times it), and the gradient
  // of o_i·c_i: scale·σ'(h_(i,j)).
  double ExpertOutput(const double* h, int i) const;
  void ExpertGradient(const double* h, int i, double scale, double* grad) const;

  UnitBlock block_;
  int expert_, router_;
};

}  // namespace moeflow
