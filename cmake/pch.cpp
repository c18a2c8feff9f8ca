// Carries the precompiled header shared by the project's programs.
