// models/rank_one.hpp (internal)
// The best rank-one approximation of a symmetric tensor given as a weighted sum of powers of
// vectors, for the merge rule of pruning (Prune in moeflow/models/protocol.hpp).
#pragma once

#include <Eigen/Core>
#include <utility>

namespace moeflow {

// T = Σ_j a_j y_j^⊗k (y_j the columns of y, k >= 1): the unit u maximising |T(u,…,u)| =
// |Σ_j a_j (y_j·u)^k| and c = T(u,…,u), so that c u^⊗k is the best rank-one approximation of T
// in the Frobenius norm; for odd k the sign of u makes c >= 0. For an exactly rank-one T with
// odd k and unit y_j, the start Σ_j a_j y_j is the answer already (contracting the index pairs
// of T gives Σ_j a_j y_j = c u); the iteration matters for approximately rank-one tensors.
std::pair<double, Eigen::VectorXd> RankOnePart(const Eigen::MatrixXd& y, const Eigen::VectorXd& a, int k);

}  // namespace moeflow
