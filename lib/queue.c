/* placeholder */ typedef int als__queue_placeholder;
