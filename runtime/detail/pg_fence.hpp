#pragma once

// Shared between runtime/pg.cpp and runtime/pg_fence.cpp.

#include <string_view>

namespace drover::pg::detail {

/// Part of the context of a fence check that found our own lease expired
/// (an `unavailable` error that is no connection failure).
constexpr std::string_view expired_lease_marker = "partition lease expired";

} // namespace drover::pg::detail
