namespace FashionViL.Bench;

/// <summary>What the bench commands share when they write a result file.</summary>
internal static class BenchFiles
{
    /// <summary>Writes <paramref name="text"/> + a newline to <paramref name="path"/> atomically (a temporary file in the same
    /// folder, then a rename: a reader never sees half a file); a missing folder is an error naming
    /// <paramref name="command"/>'s --json option.</summary>
    public static void WriteAtomically(string command, string path, string text)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{command}: --json: folder not found: {dir}");
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        File.WriteAllText(tmp, text + "\n");
        File.Move(tmp, full, overwrite: true);
    }
}
