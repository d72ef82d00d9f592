#!/bin/sh
# /init of the tiny test guest (tests/peers/kvm). It mounts every virtio disk at
# /data/<letter>, writes numbered files to them unless dr.write=0, and serves them over HTTP.
# Every file's content is a pure function of (disk letter, number, dr.kib), so the host can
# check a copy of a disk without this guest (tests/peers/kvm/check.py keeps the same rule).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
         failover net_failover virtio_net virtio_blk; do
    insmod /lib/modules/$m.ko || echo "dr-guest: insmod $m failed"
done

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

write=1 rate=10 kib=64
for word in $(cat /proc/cmdline); do
    case "$word" in
        dr.write=*) write=${word#dr.write=} ;;
        dr.rate=*) rate=${word#dr.rate=} ;;
        dr.kib=*) kib=${word#dr.kib=} ;;
    esac
done

content() {  # content LETTER N: the file's bytes, a line repeated and cut to dr.kib KiB
    yes "disk $1 file $2" | head -c $((kib * 1024))
}

mkdir -p /run/www/cgi-bin
disks=""
for letter in a b c d e f g h; do
    [ -b /dev/vd$letter ] || continue
    mkdir -p /data/$letter
    # noatime: serving a file must not write to the disk. data=ordered (ext4's default) is
    # what keeps a crash from exposing stale blocks: a file is shorter, never garbage.
    if mount -t ext4 -o noatime,data=ordered /dev/vd$letter /data/$letter; then
        disks="$disks $letter"
        ln -s /data/$letter /run/www/$letter
    else
        echo "dr-guest: mount /dev/vd$letter failed"
    fi
done

# The last number complete on every disk: a crash may have left a disk's highest file torn,
# so it counts only if its bytes are right (writing starts again at the first one not).
count=""
for letter in $disks; do
    last=$(ls /data/$letter | grep -E '^[0-9]{6}$' | tail -n 1)
    n=$(echo "$last" | sed 's/^0*//')  # not $((last)): a leading 0 means octal
    n=${n:-0}
    if [ "$n" -gt 0 ] && ! content $letter $last | cmp -s - /data/$letter/$last; then
        n=$((n - 1))
    fi
    if [ -z "$count" ] || [ "$n" -lt "$count" ]; then count=$n; fi
done
echo "${count:-0}" > /run/www/count

cat > /run/www/cgi-bin/ls <<'CGI'
#!/bin/sh
# GET /cgi-bin/ls?LETTER: disk LETTER's numbered files, one a line.
echo "Content-Type: text/plain"
echo
case "$QUERY_STRING" in
    [a-h]) [ -d /data/$QUERY_STRING ] && ls /data/$QUERY_STRING | grep -E '^[0-9]{6}$' ;;
esac
CGI
chmod 755 /run/www/cgi-bin/ls
httpd -p 80 -h /run/www
echo "dr-guest: ready, disks:$disks write=$write rate=$rate kib=$kib count=${count:-0}"

if [ "$write" != 0 ] && [ -n "$disks" ]; then
    pause=$((1000000 / rate))
    n=$((count + 1))
    while :; do
        name=$(printf %06d $n)
        for letter in $disks; do
            # rm first: rewriting a torn file must not truncate it (a truncate interrupted
            # by a crash leaves an orphan inode for fsck); a new file never needs one.
            rm -f /data/$letter/$name
            content $letter $name > /data/$letter/$name
            sync /data/$letter/$name  # busybox sync FILE is fsync(FILE)
        done
        # On tmpfs, not the disks: what a recovered disk holds must not depend on it.
        echo $n > /run/www/count.new && mv /run/www/count.new /run/www/count
        n=$((n + 1))
        usleep $pause
    done
fi
while :; do sleep 3600; done
