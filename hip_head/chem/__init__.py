"""Chemistry with a HIP: thermochemistry and rates, optimisation, transition-state search, IRC."""
