typedef int als__pool_placeholder;
