// moeflow/sgd/simulator.hpp
// Finite-d SGD on the teacher-student models of the population engine (theory.md §0–1):
//   θ ← θ − η Λ ∇_θ ½(f_θ(x) − y)²  averaged over a batch of B samples,  time t = η·steps,
// online (a fresh batch per step) or multi-pass over a fixed training set of n samples
// (reshuffled every epoch). Constraints as in the model:
//   free        w ← w − η Λ E_B[g x]
//   spherical   w ← (w − η Λ E_B[g (x − h w)]) / ‖·‖       (tangent gradient, then retraction)
//   normalised  the model uses w̄ = w/‖w‖; w ← w − η Λ E_B[g (x − h̄ w̄)]/‖w‖  (norms grow)
// Every step is U' = A U − Δᵀ X for the stacked vectors U (n × d) and the batch X (B × d), with
// A diagonal and Δ (B × n) functions of the projections H = X Uᵀ alone. Two engines run it:
//   vectors   the d-dimensional vectors themselves (needed for a fixed training set);
//   overlaps  the Gram matrix Ω = U Uᵀ only, exact in law for online SGD: given Ω = L Lᵀ
//             (rank r), H = Z Lᵀ and X Xᵀ = Z Zᵀ + W with Z (B × r) standard normal and
//             W ~ Wishart_B(d − r) independent, so
//               Ω' = A Ω A − A Hᵀ Δ − Δᵀ H A + Δᵀ X Xᵀ Δ
//             costs O(n² B + n B² + n³) per step whatever d is.
// The student starts from the same seeded initial Gram matrix as the ODE (model_builder),
// realised as vectors with the teachers on the first coordinate axes.
#pragma once

#include <Eigen/Core>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/models/protocol.hpp"
#include "moeflow/models/two_layer.hpp"

namespace moeflow {

enum class SgdEngine { kAuto, kVectors, kOverlaps };
const char* ToString(SgdEngine engine);

struct SgdOptions {
  double learning_rate = 0.0;   // η (> 0)
  int batch = 1;                // B
  long long samples = 0;        // n: 0 = online, else multi-pass over n fixed samples
  long long test_samples = 0;   // > 0: an empirical test risk on this many fresh samples per record
  SgdEngine engine = SgdEngine::kAuto;  // auto: overlaps online, vectors multi-pass
  // Events are checked at steps spaced geometrically: the next check is at least
  // event_resolution · t after the last one (and at every recorded time).
  double event_resolution = 1e-3;
  long long max_steps = 10'000'000'000LL;
  long long d = 0;
  // The protocol: each stage's multipliers and stop rule (empty: one stage, the model's own).
  std::vector<Stage> stages;

  SgdEngine ResolvedEngine() const;
  // Throws InputError naming the key (sgd.*) for impossible values.
  void Validate(int vectors) const;
};

// Observables of an SGD run: the population model's (from the overlaps, exact), then
// `norm` (student vector norms) and, when asked, `train_risk` and `test_risk_empirical`.
std::vector<ObservableInfo> SgdObservables(const TwoLayerFlow& model, const SgdOptions& options);

struct SgdRun {
  std::uint64_t seed = 0;
  RunSummary summary;       // accepted_steps counts SGD steps; t_final = η·steps
  Trajectory trajectory;    // on the integrator's output grid (first step with η·steps ≥ t)
  std::vector<double> steps;  // SGD steps of each recorded row
  Eigen::MatrixXd initial_gram;
  std::vector<StageRecord> stages;
};

struct SgdControl {
  const std::atomic<bool>* interrupt = nullptr;
  // Called now and then from the running threads with the steps done since that thread's last
  // call (a sum over the calls is the steps done so far).
  std::function<void(long long steps_done)> progress;
};

// One seed: the initial Gram matrix (all vectors, students first), its sampling noise from
// `seed`. The grid, t_end and the divergence threshold come from `integrator`.
SgdRun SimulateSgd(const TwoLayerFlow& model, const Eigen::MatrixXd& initial_gram, const SgdOptions& options,
                   const IntegratorOptions& integrator, const std::vector<EventSpec>& events, std::uint64_t seed,
                   const SgdControl& control = {});

// Seeds run on `threads` threads; run i uses seeds[i] and initial_gram(seeds[i]). Each run is
// bit-identical whatever the thread count.
std::vector<SgdRun> SimulateSgdSeeds(const TwoLayerFlow& model,
                                     const std::function<Eigen::MatrixXd(std::uint64_t)>& initial_gram,
                                     const SgdOptions& options, const IntegratorOptions& integrator,
                                     const std::vector<EventSpec>& events, const std::vector<std::uint64_t>& seeds,
                                     int threads, const SgdControl& control = {});

// Vectors (rows, n × dimension) whose Gram matrix is `gram`, teachers (the last n − p rows,
// orthonormal) on the first coordinate axes. Throws InputError if `gram` is not PSD.
Eigen::MatrixXd VectorsFromGram(const Eigen::MatrixXd& gram, int students, long long dimension);

}  // namespace moeflow
