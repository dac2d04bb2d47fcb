@0x84eefa72b2ae1aa1;
# Admin snapshots: the supervision tree of a node, for droverctl and the
# HTTP API. Mirrors drover::tree_node (runtime/tree.hpp).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");

enum ChildKind {
  # What a child is.

  worker @0;
  # A leaf actor doing work.

  supervisor @1;
  # A supervisor with children of its own.
}

enum ChildState {
  # Life-cycle state of a child as its supervisor sees it.

  starting @0;
  # Spawned, not yet confirmed.

  running @1;
  # Alive and monitored.

  restarting @2;
  # Down, waiting out its restart backoff.

  stopping @3;
  # Asked to exit, waiting for its down message.

  stopped @4;
  # Exited and will not be restarted.

  failed @5;
  # Its supervisor gave up on it (restart intensity exceeded).
}

enum RestartType {
  # When a supervisor restarts a child (as in Erlang/OTP).

  permanent @0;
  # Always.

  transient @1;
  # Only after an abnormal exit.

  temporary @2;
  # Never.
}

enum Strategy {
  # What a supervisor restarts when one child fails.

  oneForOne @0;
  # Only the failed child.

  oneForAll @1;
  # All of its children.
}

struct TreeNode {
  # One node of the supervision tree.

  name @0 :Text;
  # Child name, unique among its siblings.

  kind @1 :ChildKind;
  # Worker or supervisor.

  state @2 :ChildState = running;
  # Life-cycle state.

  restart @3 :RestartType;
  # Restart type.

  strategy @4 :Strategy;
  # Restart strategy; meaningful for supervisors only.

  restarts @5 :UInt32;
  # Restarts since its supervisor started.

  uptimeMs @6 :Int64;
  # Milliseconds since the current incarnation started; 0 when not running.

  lastExit @7 :Text;
  # Last abnormal exit reason, rendered; empty if none.

  children @8 :List(TreeNode);
  # Children, for supervisors; empty for workers.
}

struct TreeSnapshot {
  # A node's whole supervision tree at one moment.

  nodeId @0 :Text;
  # The node described.

  takenAtMs @1 :Int64;
  # When the snapshot was taken, Unix ms.

  root @2 :TreeNode;
  # The node's root supervisor.
}
