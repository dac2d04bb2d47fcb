#pragma once

// Who may join a coordinator (docs/cluster.md "Who may join"): a node
// proves it knows the cluster's join secret by answering the
// coordinator's one-time challenge with
//   HMAC-SHA256(secret, "drover-join/1" LF role LF node_id LF challenge)
// so a proof is bound to one role, one node id and one challenge, and the
// secret never crosses the network.

#include <string>

namespace drover {

/// A fresh challenge: 32 random bytes.
std::string make_join_challenge();

/// The proof for (role, node_id, challenge) under `secret`.
std::string join_proof(const std::string& secret, const std::string& role,
                       const std::string& node_id,
                       const std::string& challenge);

/// Constant-time check of `proof`.
bool check_join_proof(const std::string& secret, const std::string& role,
                      const std::string& node_id, const std::string& challenge,
                      const std::string& proof);

} // namespace drover
