# Sources of drover_actors, relative to actors/. Each actor adds its .cpp.
set(DROVER_ACTOR_SOURCES progress_publisher.cpp node_link.cpp node_link_slots.cpp node_link_join.cpp node_link_views.cpp cluster_endpoint.cpp
  handover_board.cpp
  worker_agent.cpp
  worker_agent_handover.cpp
  worker_agent_link.cpp
  worker_agent_run.cpp
  job_supervisor_outcome.cpp)
