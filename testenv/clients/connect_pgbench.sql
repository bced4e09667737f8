select '''' || replace(current_user, '''', '''\''''') || '''' as who \gset
\shell printf '%s\n' :who >&3
