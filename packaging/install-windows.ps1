# Install Patina for the current user on Windows.
#
#   1. finds Python 3.10, 3.11 or 3.12 (the py launcher first, then python on PATH),
#   2. creates a virtual environment next to the app (<app>\.venv),
#   3. installs PyTorch: the CUDA build when nvidia-smi finds an NVIDIA GPU, the CPU build otherwise,
#   4. installs Patina into it (pip install -e <app>),
#   5. creates "Patina" shortcuts in the Start menu and on the desktop (no console window: pythonw.exe).
#
# Start it with install-windows.bat (double-click), or:
#   powershell -NoProfile -ExecutionPolicy Bypass -File install-windows.ps1 [-DryRun] [-Python C:\path\python.exe]
#       [-TorchIndex URL] [-NoDesktopShortcut]
# -DryRun prints the venv and pip commands instead of running them (nothing is downloaded).
# The execution policy is only bypassed for this one process; nothing global is changed.
# Paths may contain spaces and any Unicode characters. (This file is ASCII on purpose: Windows PowerShell 5.1
# reads scripts without a byte-order mark in the ANSI code page.)

param(
    [switch]$DryRun,
    [string]$Python = "",
    [string]$TorchIndex = "",
    [string]$CudaIndex = "https://download.pytorch.org/whl/cu128",
    [switch]$NoDesktopShortcut
)

$ErrorActionPreference = "Stop"
$CpuIndex = "https://download.pytorch.org/whl/cpu"
$AppDir = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot "..")).Path
$Venv = Join-Path $AppDir ".venv"
$VenvPython = Join-Path $Venv "Scripts\python.exe"
$VenvPythonW = Join-Path $Venv "Scripts\pythonw.exe"
$Icon = Join-Path $AppDir "resources\icons\patina.ico"

function Say([string]$Text) { Write-Host "patina-install: $Text" }
function Fail([string]$Text) {
    Write-Host "patina-install: error: $Text" -ForegroundColor Red
    exit 1
}

function Invoke-Step([string]$Exe, [string[]]$Arguments) {
    if ($DryRun) {
        $shown = @($Exe) + $Arguments | ForEach-Object { if ($_ -match '\s') { '"' + $_ + '"' } else { $_ } }
        Write-Host ("would run: " + ($shown -join " "))
        return
    }
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { Fail "this step failed (exit code $LASTEXITCODE): $Exe $($Arguments -join ' ')" }
}

$VersionCheck = "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 13) else 1)"

function Test-Python([string]$Exe, [string[]]$Prefix = @()) {
    try {
        & $Exe @Prefix -c $VersionCheck 2>$null | Out-Null
        return ($LASTEXITCODE -eq 0)
    } catch { return $false }
}

function Find-Python {
    if ($Python) {
        if (-not (Test-Python $Python)) { Fail "`"$Python`" is not Python 3.10, 3.11 or 3.12." }
        return $Python
    }
    if (Get-Command py -ErrorAction SilentlyContinue) {
        foreach ($v in @("-3.12", "-3.11", "-3.10")) {
            if (Test-Python "py" @($v)) {
                return (& py $v -c "import sys; print(sys.executable)").Trim()
            }
        }
    }
    foreach ($name in @("python", "python3")) {
        $cmd = Get-Command $name -ErrorAction SilentlyContinue
        # Skip the Microsoft Store stub in WindowsApps: it opens the Store instead of running Python.
        if ($cmd -and ($cmd.Source -notmatch "\\WindowsApps\\") -and (Test-Python $cmd.Source)) {
            return $cmd.Source
        }
    }
    Fail ("Patina needs Python 3.10, 3.11 or 3.12 (PyTorch has no wheels for newer ones yet). Install it from " +
          "https://www.python.org/downloads/windows/ (tick 'Add python.exe to PATH'), then run this again.")
}

if (-not (Test-Path -LiteralPath (Join-Path $AppDir "pyproject.toml"))) {
    Fail "run this script from Patina's packaging folder (no pyproject.toml in `"$AppDir`")."
}

$Py = Find-Python
Say "app folder:  $AppDir"
Say "Python:      $Py"

if ($TorchIndex) {
    Say "PyTorch:     $TorchIndex (from -TorchIndex)"
} else {
    $gpu = $null
    if (Get-Command nvidia-smi -ErrorAction SilentlyContinue) {
        try { $gpu = (& nvidia-smi -L 2>$null | Select-Object -First 1) } catch { $gpu = $null }
        if ($LASTEXITCODE -ne 0) { $gpu = $null }
    }
    if ($gpu) {
        $TorchIndex = $CudaIndex
        Say "GPU:         $gpu"
        Say "PyTorch:     CUDA build from $TorchIndex"
    } else {
        $TorchIndex = $CpuIndex
        Say "GPU:         none found (nvidia-smi is missing or lists no GPU)"
        Say "PyTorch:     CPU build from $TorchIndex (training will be very slow; install the NVIDIA driver and run this again)"
    }
}

Say "environment: $Venv"
if (-not (Test-Path -LiteralPath $VenvPython)) {
    Invoke-Step $Py @("-m", "venv", $Venv)
}
Invoke-Step $VenvPython @("-m", "pip", "install", "--upgrade", "pip")
Invoke-Step $VenvPython @("-m", "pip", "install", "--upgrade", "torch", "--index-url", $TorchIndex)
Invoke-Step $VenvPython @("-m", "pip", "install", "-e", $AppDir)

function New-PatinaShortcut([string]$Folder) {
    $path = Join-Path $Folder "Patina.lnk"
    if ($DryRun) { Write-Host "would create shortcut: $path"; return }
    $shell = New-Object -ComObject WScript.Shell
    $lnk = $shell.CreateShortcut($path)
    $lnk.TargetPath = $VenvPythonW
    $lnk.Arguments = "-m gui.launcher"
    $lnk.WorkingDirectory = $AppDir
    $lnk.IconLocation = "$Icon,0"
    $lnk.Description = "Train Stable Diffusion LoRAs on your own GPU"
    $lnk.Save()
    Say "shortcut:    $path"
}

New-PatinaShortcut ([Environment]::GetFolderPath("Programs"))
if (-not $NoDesktopShortcut) { New-PatinaShortcut ([Environment]::GetFolderPath("Desktop")) }

if ($DryRun) { Say "dry run: nothing was downloaded or installed." }
else { Say "done. Start Patina from the Start menu or the desktop shortcut (or packaging\patina.bat)." }
