"""Running the engine for the front ends: one engine thread with cancellable jobs, and the plan -> engine -> answer step."""
