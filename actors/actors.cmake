# Sources of drover_actors, relative to actors/. Each actor adds its .cpp.
set(DROVER_ACTOR_SOURCES progress_publisher.cpp)
