@0xc894ac8c360f859b;
# Progress of a running attempt, as a worker reports it and as subscribers
# see it.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");
using Json = import "/capnp/compat/json.capnp";

enum StageState {
  # Life cycle of one named stage of a job.

  pending @0;
  # Not started yet.

  running @1;
  # In progress.

  done @2;
  # Finished successfully.

  failed @3;
  # Finished with an error.

  skipped @4;
  # Will not run (not needed for this input, or resumed past it).
}

struct Stage {
  # One named step of a job (e.g. "download", "transcode", "upload").

  name @0 :Text;
  # Stage name, unique within the job.

  state @1 :StageState;
  # Where the stage is in its life cycle.

  percent @2 :Float64;
  # Completion of this stage, 0 to 100.
}

struct ProgressUpdate {
  # One progress report. Within an attempt, `percent` never decreases;
  # updates from a superseded attempt are rejected (fencing by `attempt`).

  jobId @0 :Text;
  # The job.

  attempt @1 :UInt32;
  # The reporting attempt (fencing token).

  percent @2 :Float64;
  # Overall completion, 0 to 100 (a float so hour-long jobs can show
  # steady movement below 1 %).

  stage @3 :Text;
  # Name of the current stage; empty if the job has no stages.

  message @4 :Text;
  # Human-readable status line; empty if none.

  atMs @5 :Int64;
  # When the worker took the measurement, Unix time in milliseconds.

  etaMs @6 :Int64 = -1;
  # Estimated time remaining from `atMs`, in milliseconds; -1 = unknown.

  stages @7 :List(Stage);
  # The complete stage list, when it changed; empty = unchanged.

  checkpoint @8 :Data $Json.base64;
  # A new checkpoint to persist (opaque to Drover; a resumed attempt starts
  # from the last committed one); empty = none. Coalescing of updates must
  # keep the newest non-empty checkpoint.
}
